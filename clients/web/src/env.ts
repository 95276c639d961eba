// What the client takes from its host (a browser or Node). The library compiles against
// ES2022 alone, without DOM or Node types, so that nothing host-specific slips in: the few host
// features it needs are reached through globalThis here, typed as narrowly as they are used,
// and each is optional. Timers are in clock.ts.

interface EventSource {
  addEventListener(type: string, listener: () => void): void;
  removeEventListener(type: string, listener: () => void): void;
}

interface Host {
  crypto?: { randomUUID?(): string; getRandomValues?(bytes: Uint8Array): Uint8Array };
  TextDecoder: new () => { decode(bytes: Uint8Array): string };
  reportError?(error: unknown): void;
  console?: { error(...values: unknown[]): void };
  addEventListener?: EventSource["addEventListener"];
  removeEventListener?: EventSource["removeEventListener"];
  document?: EventSource & { visibilityState?: string };
}

const host = globalThis as unknown as Host;

/** A random UUID (v4), for client message and upload ids. */
export function randomId(): string {
  // randomUUID exists only in secure contexts (https, localhost); getRandomValues everywhere.
  const uuid = host.crypto?.randomUUID?.();
  if (uuid) {
    return uuid;
  }
  const bytes = new Uint8Array(16);
  if (host.crypto?.getRandomValues) {
    host.crypto.getRandomValues(bytes);
  } else {
    for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  }
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export function utf8(bytes: Uint8Array): string {
  return new host.TextDecoder().decode(bytes);
}

/**
 * Reports an exception from the app's listener (or a bug of the client) without letting it
 * break the client, the way the host reports uncaught errors, but without ending the program.
 */
export function report(error: unknown): void {
  if (host.reportError) host.reportError(error);
  else host.console?.error(error);
}

/** A global of the host (WebSocket, fetch), if it has one. */
export function hostGlobal<T>(name: string): T | undefined {
  return (globalThis as unknown as Record<string, T | undefined>)[name];
}

/**
 * Calls `f` whenever the host says the network may be back or the page is looked at again (a
 * browser's `online` event, its document becoming visible): moments when a connection that
 * looks open may be dead. Nothing in hosts without such events (Node). Returns the unsubscribe.
 */
export function onHostWake(f: () => void): () => void {
  const onVisible = () => {
    if (host.document?.visibilityState === "visible") f();
  };
  host.addEventListener?.("online", f);
  host.document?.addEventListener("visibilitychange", onVisible);
  return () => {
    host.removeEventListener?.("online", f);
    host.document?.removeEventListener("visibilitychange", onVisible);
  };
}

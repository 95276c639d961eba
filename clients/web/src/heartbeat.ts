// Whether a connection is alive, judged by what comes from the server and never by the
// socket's readyState: a socket whose network went away (a laptop that slept, a Wi-Fi that
// changed) stays OPEN for minutes while nothing moves. The client pings every heartbeat
// interval (docs/PROTOCOL.md, "Heartbeat"); a ping must be followed by some frame from the
// server within its deadline, and a connection silent for the idle timeout is dead too.
//
// A state machine without timers or I/O: the session asks `check` what is due and arms one
// timer for `nextCheckAt`.

export interface HeartbeatSettings {
  /** Ping this often (the Welcome's heartbeat_interval_ms). */
  readonly intervalMs: number;
  /** Nothing heard for this long: dead (the Welcome's idle_timeout_ms). */
  readonly idleMs: number;
  /** A ping not followed by any frame within this long: dead. */
  readonly pongTimeoutMs: number;
}

/** Used when a Welcome announces no heartbeat interval (0). */
export const DEFAULT_HEARTBEAT_MS = 30_000;
/** The shortest interval and idle timeout taken from a Welcome, against a server that asks for busy loops. */
const MIN_HEARTBEAT_MS = 1_000;
const MIN_IDLE_MS = 3_000;
/** How long a ping may go unanswered by default. */
export const DEFAULT_PONG_TIMEOUT_MS = 10_000;

/** The settings for a Welcome's announced interval and idle timeout (0: not announced). */
export function heartbeatSettings(
  heartbeatIntervalMs: number,
  idleTimeoutMs: number,
  pongTimeoutMs = DEFAULT_PONG_TIMEOUT_MS,
): HeartbeatSettings {
  const intervalMs = Math.max(heartbeatIntervalMs || DEFAULT_HEARTBEAT_MS, MIN_HEARTBEAT_MS);
  const idleMs = Math.max(idleTimeoutMs || 3 * intervalMs, MIN_IDLE_MS);
  return { intervalMs, idleMs, pongTimeoutMs: Math.max(pongTimeoutMs, 1) };
}

export type Verdict =
  /** Nothing to do now. */
  | "alive"
  /** Send a ping, then report it with `pinged`. */
  | "ping"
  /** The connection is dead: replace it. */
  | "dead";

export class Heartbeat {
  private lastHeard: number;
  private lastPing: number;
  /** The deadline of the pings sent since the server was last heard (none: nothing awaited). */
  private answerBy: number | undefined;

  constructor(
    private readonly settings: HeartbeatSettings,
    now: number,
  ) {
    this.lastHeard = now;
    this.lastPing = now;
  }

  /** A frame came from the server: it is there. */
  heard(now: number): void {
    this.lastHeard = now;
    this.answerBy = undefined;
  }

  /** A ping went out; some frame must come within `timeoutMs` (the settings' pong timeout by default). */
  pinged(now: number, timeoutMs = this.settings.pongTimeoutMs): void {
    this.lastPing = now;
    this.answerBy = Math.min(this.answerBy ?? Infinity, now + timeoutMs);
  }

  /** What is due at `now`. */
  check(now: number): Verdict {
    if (this.answerBy !== undefined && now >= this.answerBy) return "dead";
    if (now - this.lastHeard >= this.settings.idleMs) return "dead";
    if (now - this.lastPing >= this.settings.intervalMs) return "ping";
    return "alive";
  }

  /** When `check` may give another verdict. */
  nextCheckAt(): number {
    return Math.min(
      this.lastPing + this.settings.intervalMs,
      this.lastHeard + this.settings.idleMs,
      this.answerBy ?? Infinity,
    );
  }
}

// Reads conformance/vectors/ (docs/PROTOCOL.md, "Golden vectors").

import { readFileSync, readdirSync } from "node:fs";
import type { JsonValue } from "@bufbuild/protobuf";

export const VECTORS = new URL("../../../conformance/vectors/", import.meta.url);

export interface FrameFile {
  message: string;
  variant: string;
  cases: { name: string; description: string; fields: JsonValue; hex: string }[];
}

export interface MalformedCase {
  name: string;
  description: string;
  message: string;
  max_frame_bytes: number;
  hex: string;
  error: { code: number; name: string; request_id: number };
}

export interface ErrorCodeRow {
  code: number;
  name: string;
  retryable: boolean;
  meaning: string;
}

export function readJson<T>(relative: string): T {
  return JSON.parse(readFileSync(new URL(relative, VECTORS), "utf8")) as T;
}

/** The .json files of client/ or server/, sorted. */
export function frameFiles(dir: "client" | "server"): string[] {
  return readdirSync(new URL(`${dir}/`, VECTORS))
    .filter((name) => name.endsWith(".json"))
    .sort();
}

export function fromHex(hex: string): Uint8Array {
  return Uint8Array.from(Buffer.from(hex, "hex"));
}

export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("hex");
}

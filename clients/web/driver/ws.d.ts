// The one thing the driver takes from the ws package: its WebSocket class, which has the
// browser's API (the client needs nothing more). Declared here rather than adding @types/ws.
declare module "ws" {
  import type { WebSocketConstructor } from "@im/web";
  const WebSocket: WebSocketConstructor;
  export default WebSocket;
}

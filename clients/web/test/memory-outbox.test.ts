// The in-memory outbox store against what every store must do.

import { MemoryOutbox } from "@im/web";
import { checkOutboxStore } from "./outbox-store-suite.js";

checkOutboxStore("MemoryOutbox", async () => new MemoryOutbox());

#!/usr/bin/env node
// Empties dist/ before a release build (prepack): tsc never deletes what an older or a dev build left there (source
// maps, the output of deleted sources), and everything under dist/ ships.
import { rmSync } from "node:fs";
import { fileURLToPath } from "node:url";

rmSync(fileURLToPath(new URL("../../dist", import.meta.url)), { recursive: true, force: true });

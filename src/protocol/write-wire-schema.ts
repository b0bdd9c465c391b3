import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { renderWireSchema } from "./wire-schema.js";

// `npm run wire-schema`: rewrites docs/wire-schema.json from the zod schemas (run from dist/protocol/ after a build).
const target = fileURLToPath(new URL("../../docs/wire-schema.json", import.meta.url));
writeFileSync(target, renderWireSchema());
process.stdout.write(`Wrote ${target}\n`);

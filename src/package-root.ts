import { fileURLToPath } from "node:url";

// Both src/*.ts (under vitest) and dist/*.js (after build) sit one level below the package root.
export const packageRoot: string = fileURLToPath(new URL("..", import.meta.url));

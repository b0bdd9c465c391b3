export { type DisplayOptions, display, inNotebook } from "./display.js";
export type { NotebookDisplay } from "./tslab-display.js";

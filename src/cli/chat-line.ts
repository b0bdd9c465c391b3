import { statSync } from "node:fs";
import { extname } from "node:path";
import { fileURLToPath } from "node:url";

/** What one line typed (or piped) into `idefics2 chat` asks for. */
export type ChatLine =
  | { kind: "empty" }
  | { kind: "text"; text: string }
  | { kind: "picture"; source: string }
  | { kind: "command"; name: ChatCommandName; argument: string }
  | { kind: "unknown-command"; name: string };

export const CHAT_COMMANDS = ["image", "reset", "save", "load", "quit", "help"] as const;
export type ChatCommandName = (typeof CHAT_COMMANDS)[number];

const ALIASES: Record<string, ChatCommandName> = { exit: "quit", bye: "quit", "?": "help" };

export const CHAT_HELP = `  /image PATH_OR_URL   attach a picture to your next message (pasting a picture's path alone does the same)
  /reset               forget the conversation (the system turn stays)
  /save FILE           write the conversation to FILE as JSON, pictures included
  /load FILE           go on from a conversation /save wrote
  /quit                leave (also Ctrl-D, or Ctrl-C twice); Ctrl-C while answering stops the answer`;

const PICTURE_EXTENSIONS = new Set([".png", ".jpg", ".jpeg", ".webp", ".gif", ".tif", ".tiff", ".avif", ".heic", ".heif", ".bmp"]);

/** Reads one line: a `/command`, a pasted picture (a path alone on its line, as terminals paste a dropped file), or text. */
export function parseChatLine(line: string): ChatLine {
  const trimmed = line.trim();
  if (trimmed === "") return { kind: "empty" };
  const command = /^\/(\S+)\s*(.*)$/s.exec(trimmed);
  if (command && !pastedPicture(trimmed)) {
    const given = (command[1] ?? "").toLowerCase();
    const name = ALIASES[given] ?? CHAT_COMMANDS.find((known) => known === given);
    return name ? { kind: "command", name, argument: unquoted(command[2] ?? "") } : { kind: "unknown-command", name: given };
  }
  const picture = pastedPicture(trimmed);
  return picture ? { kind: "picture", source: picture } : { kind: "text", text: trimmed };
}

// A dropped file arrives quoted ('/a b.png'), with escaped spaces (/a\ b.png) or as a file:// URL; a data: URL of
// an image counts too. Only an existing regular file with a picture's extension is taken for one.
function pastedPicture(text: string): string | undefined {
  if (/^data:image\//i.test(text)) return text;
  let path = unquoted(text).replace(/\\([ \\'"()&])/g, "$1");
  if (/^file:\/\//i.test(path)) {
    try {
      path = fileURLToPath(path);
    } catch {
      return undefined;
    }
  }
  if (!PICTURE_EXTENSIONS.has(extname(path).toLowerCase())) return undefined;
  try {
    return statSync(path).isFile() ? path : undefined;
  } catch {
    return undefined;
  }
}

function unquoted(text: string): string {
  const trimmed = text.trim();
  const quote = trimmed.charAt(0);
  return (quote === "'" || quote === '"') && trimmed.length > 1 && trimmed.endsWith(quote) ? trimmed.slice(1, -1) : trimmed;
}

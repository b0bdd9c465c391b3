const HIDDEN = "***";
// scheme://…: a URL quoted in free text ends at whitespace, a quote or an angle bracket, and not on punctuation.
const URL_IN_TEXT = /\b[a-z][a-z\d+.-]*:\/\/[^\s"'`<>]*[^\s"'`<>).,;:]/gi;

/**
 * A URL as every message may quote it: credentials become `***:***@`, each query value `***` (the keys stay),
 * a fragment `#***`. Text that does not parse as a URL is redacted too, more broadly, so it never leaks either.
 */
export function redactUrl(url: string | URL): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return redactUnparsed(String(url));
  }
  const slashes = parsed.href.startsWith(`${parsed.protocol}//`) ? "//" : "";
  const credentials = parsed.password ? `${HIDDEN}:${HIDDEN}@` : parsed.username ? `${HIDDEN}@` : "";
  const query = parsed.search ? `?${redactQuery(parsed.search.slice(1))}` : "";
  const fragment = parsed.hash ? `#${HIDDEN}` : "";
  return `${parsed.protocol}${slashes}${credentials}${parsed.host}${parsed.pathname}${query}${fragment}`;
}

/** Free text (a network error's message) with every URL in it redacted as redactUrl does. */
export function redactUrlsIn(text: string): string {
  return text.replace(URL_IN_TEXT, (url) => redactUrl(url));
}

// Without a parser's help: everything between `//` and the last `@` may be a credential, then `?` and `#` as usual.
function redactUnparsed(text: string): string {
  const start = text.indexOf("//");
  const at = text.lastIndexOf("@");
  const prefix = start !== -1 && at > start ? `${text.slice(0, start + 2)}${HIDDEN}@` : "";
  const rest = prefix ? text.slice(at + 1) : text;
  const hashAt = rest.indexOf("#");
  const beforeHash = hashAt === -1 ? rest : rest.slice(0, hashAt);
  const queryAt = beforeHash.indexOf("?");
  const path = queryAt === -1 ? beforeHash : beforeHash.slice(0, queryAt);
  const query = queryAt === -1 ? "" : `?${redactQuery(beforeHash.slice(queryAt + 1))}`;
  return `${prefix}${path}${query}${hashAt === -1 ? "" : `#${HIDDEN}`}`;
}

// `token=abc&x=1` → `token=***&x=***`. A part without `=`, or one that only ends in `=` padding (`?dG9rZW4==`),
// may itself be the secret, so it is hidden whole.
function redactQuery(query: string): string {
  return query
    .split("&")
    .map((part) => {
      const equals = part.indexOf("=");
      if (equals === -1 || /^=+$/.test(part.slice(equals + 1))) return part === "" ? part : HIDDEN;
      return `${part.slice(0, equals)}=${HIDDEN}`;
    })
    .join("&");
}

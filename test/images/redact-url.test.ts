import { describe, expect, it } from "vitest";
import { describeSource } from "../../src/images/describe-source.js";
import { redactUrl, redactUrlsIn } from "../../src/images/redact-url.js";

const CASES: [input: string, redacted: string][] = [
  ["http://user:password@example.org/a.png", "http://***:***@example.org/a.png"],
  ["https://token@example.org/a.png", "https://***@example.org/a.png"],
  ["https://:only-password@example.org/a.png", "https://***:***@example.org/a.png"],
  ["https://example.org/a.png?token=s3cret&x=1", "https://example.org/a.png?token=***&x=***"],
  ["https://example.org/a.png?token=s3cret&&flag=", "https://example.org/a.png?token=***&&flag=***"],
  ["https://example.org/a.png?bare-secret-value", "https://example.org/a.png?***"],
  ["https://example.org/a.png?dG9rZW4tdmFsdWU==", "https://example.org/a.png?***"],
  ["https://example.org/a.png#access_token=s3cret", "https://example.org/a.png#***"],
  ["http://u:p@example.org:8080/x/y.jpg?sig=abc#frag", "http://***:***@example.org:8080/x/y.jpg?sig=***#***"],
  ["http://example.org/plain.png", "http://example.org/plain.png"],
  ["file:///tmp/picture.png", "file:///tmp/picture.png"],
  ["ftp://user:pw@files.example.org/p.png?key=v", "ftp://***:***@files.example.org/p.png?key=***"],
  // Not parseable: everything up to the last `@` goes, then the query and the fragment as usual.
  ["http://user:pa ss@[bad/x?token=s3cret", "http://***@[bad/x?token=***"],
  ["http://user:p@ss word@host/?t=1#x", "http://***:***@host/?t=***#***"],
  ["http://[::1/?key=s3cret", "http://[::1/?key=***"],
];

describe("redactUrl", () => {
  it.each(CASES)("redacts %s", (input, redacted) => {
    expect(redactUrl(input)).toBe(redacted);
    for (const secret of ["password", "s3cret", "only-password", "pw", "abc", "frag", "bare-secret-value", "dG9rZW4tdmFsdWU"]) {
      expect(redactUrl(input)).not.toContain(secret);
    }
  });

  it("redacts a URL object the same as its string", () => {
    expect(redactUrl(new URL("http://user:password@example.org/a.png?token=s3cret"))).toBe("http://***:***@example.org/a.png?token=***");
  });
});

describe("redactUrlsIn", () => {
  it("redacts every URL in free text and leaves the rest", () => {
    const text =
      "Request cannot be constructed from a URL that includes credentials: http://user:password@h/x?token=s3cret (see https://a.example/?k=v)";
    expect(redactUrlsIn(text)).toBe(
      "Request cannot be constructed from a URL that includes credentials: http://***:***@h/x?token=*** (see https://a.example/?k=***)",
    );
    expect(redactUrlsIn("connect ECONNREFUSED 127.0.0.1:8080")).toBe("connect ECONNREFUSED 127.0.0.1:8080");
  });
});

describe("describeSource", () => {
  it("describes every URL source through redactUrl, whatever its scheme", () => {
    expect(describeSource("http://user:password@example.org/a.png?token=s3cret")).toBe("http://***:***@example.org/a.png?token=***");
    expect(describeSource(new URL("https://example.org/a.png?sig=s3cret"))).toBe("https://example.org/a.png?sig=***");
    expect(describeSource("gopher://user:password@example.org/?token=s3cret")).toBe("gopher://***:***@example.org/?token=***");
  });

  it("leaves a path as it is, and shortens a long description", () => {
    expect(describeSource("/tmp/what?.png")).toBe("/tmp/what?.png");
    const long = describeSource(`https://example.org/${"a".repeat(300)}?token=s3cret`);
    expect(long).toMatch(/^https:\/\/example\.org\/a{99}… \(330 characters\)$/);
    expect(long).not.toContain("s3cret");
  });
});

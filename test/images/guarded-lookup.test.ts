import type { LookupAddress } from "node:dns";
import { describe, expect, it } from "vitest";
import { guardedLookup, PrivateAddressError, refuseLiteralHost, type Resolver } from "../../src/images/guarded-lookup.js";

// The validator alone, with resolvers made up by the test: no name is looked up on the network, nothing is contacted.

type Answer = { error: unknown; address?: string | LookupAddress[]; family?: number };

function ask(lookup: ReturnType<typeof guardedLookup>, hostname: string, all: boolean): Promise<Answer> {
  return new Promise((resolve) => {
    lookup(hostname, { all }, (error, address, family) => resolve({ error, address, family }));
  });
}

// A resolver that answers `answers` in turn, one list per call, as a DNS server that changes its answer would.
function resolverOf(...answers: string[][]): { resolve: Resolver; calls: number } {
  const state = { calls: 0, resolve: undefined as unknown as Resolver };
  state.resolve = (_hostname, _options, callback) => {
    const addresses = answers[Math.min(state.calls, answers.length - 1)] ?? [];
    state.calls += 1;
    callback(
      null,
      addresses.map((address) => ({ address, family: address.includes(":") ? 6 : 4 })),
    );
  };
  return state;
}

describe("guardedLookup", () => {
  it.each([
    ["10.0.0.7"],
    ["192.168.0.10"],
    ["172.20.1.1"],
    ["169.254.169.254"],
    ["100.100.100.200"],
    ["127.0.0.1"],
    ["0.0.0.0"],
    ["::1"],
    ["fe80::a"],
    ["fd00:ec2::254"],
    ["::ffff:10.0.0.1"],
  ])("refuses a name that resolves to %s", async (address) => {
    const { error } = await ask(guardedLookup(resolverOf([address]).resolve), "images.example.org", true);
    expect(error).toBeInstanceOf(PrivateAddressError);
    expect((error as PrivateAddressError).message).toMatch(
      new RegExp(`^images\\.example\\.org resolves to ${address.replaceAll(".", "\\.")}, an? `),
    );
  });

  it("refuses a name when any one of its addresses is private, even listed after a public one", async () => {
    const { error } = await ask(
      guardedLookup(resolverOf(["93.184.216.34", "2606:2800:220:1::1", "10.1.2.3"]).resolve),
      "mixed.example",
      true,
    );
    expect(error).toMatchObject({ name: "PrivateAddressError", host: "mixed.example", address: "10.1.2.3" });
  });

  it("hands back exactly the public addresses it checked, in both callback shapes", async () => {
    const { resolve } = resolverOf(["93.184.216.34", "2606:2800:220:1::1"]);
    expect(await ask(guardedLookup(resolve), "public.example", true)).toEqual({
      error: null,
      address: [
        { address: "93.184.216.34", family: 4 },
        { address: "2606:2800:220:1::1", family: 6 },
      ],
      family: undefined,
    });
    expect(await ask(guardedLookup(resolve), "public.example", false)).toEqual({ error: null, address: "93.184.216.34", family: 4 });
  });

  it("checks every connection again: a DNS answer that turns private on the second lookup (rebinding) is refused", async () => {
    const rebinding = resolverOf(["93.184.216.34"], ["127.0.0.1"]);
    const lookup = guardedLookup(rebinding.resolve);
    expect((await ask(lookup, "rebind.example", true)).error).toBeNull();
    expect((await ask(lookup, "rebind.example", true)).error).toMatchObject({
      address: "127.0.0.1",
      reason: expect.stringMatching(/^a loopback/),
    });
    expect(rebinding.calls).toBe(2);
  });

  it("refuses localhost names without resolving them", async () => {
    const resolver = resolverOf(["93.184.216.34"]);
    for (const name of ["localhost", "LOCALHOST", "localhost.", "app.localhost", "a.b.localhost."]) {
      expect((await ask(guardedLookup(resolver.resolve), name, true)).error, name).toBeInstanceOf(PrivateAddressError);
    }
    expect(resolver.calls).toBe(0);
  });

  it("with the system resolver, refuses localhost and private IP literals (resolved locally, without DNS)", async () => {
    for (const host of ["localhost", "10.0.0.1", "192.168.1.1", "169.254.169.254", "::1", "fc00::1"]) {
      const { error } = await ask(guardedLookup(), host, true);
      expect(error, host).toBeInstanceOf(PrivateAddressError);
    }
  });

  it("passes a resolver's own error on unchanged", async () => {
    const failure = Object.assign(new Error("getaddrinfo ENOTFOUND nowhere.invalid"), { code: "ENOTFOUND" });
    const lookup = guardedLookup((_hostname, _options, callback) => callback(failure, []));
    expect((await ask(lookup, "nowhere.invalid", true)).error).toBe(failure);
  });
});

describe("refuseLiteralHost", () => {
  it.each(["127.0.0.1", "10.9.8.7", "[::1]", "[::ffff:7f00:1]", "[fe80::1]", "localhost", "0.0.0.0", "[::]"])("refuses %s", (host) => {
    expect(refuseLiteralHost(host)).toBeInstanceOf(PrivateAddressError);
  });

  it.each(["93.184.216.34", "[2606:4700:4700::1111]", "example.org"])("leaves %s to the lookup", (host) => {
    expect(refuseLiteralHost(host)).toBeUndefined();
  });
});

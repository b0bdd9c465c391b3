import { isIPv4, isIPv6 } from "node:net";

// [first address, prefix length, what the range is]; IANA's special-purpose registries, the ranges not reachable
// on the public internet. Checked in order, so a narrower range comes before a wider one that holds it.
type Range = readonly [network: string, bits: number, what: string];

const IPV4_RANGES: readonly Range[] = [
  ["0.0.0.0", 8, "an unspecified address (0.0.0.0/8, which reaches this host)"],
  ["10.0.0.0", 8, "a private address (10.0.0.0/8)"],
  ["100.64.0.0", 10, "a shared address (100.64.0.0/10, carrier-grade NAT)"],
  ["127.0.0.0", 8, "a loopback address (127.0.0.0/8)"],
  ["169.254.0.0", 16, "a link-local address (169.254.0.0/16, where cloud metadata services answer)"],
  ["172.16.0.0", 12, "a private address (172.16.0.0/12)"],
  ["192.0.0.0", 24, "a reserved address (192.0.0.0/24, IETF protocol assignments)"],
  ["192.0.2.0", 24, "a reserved address (192.0.2.0/24, documentation)"],
  ["192.88.99.0", 24, "a reserved address (192.88.99.0/24, 6to4 relays)"],
  ["192.168.0.0", 16, "a private address (192.168.0.0/16)"],
  ["198.18.0.0", 15, "a reserved address (198.18.0.0/15, benchmarking)"],
  ["198.51.100.0", 24, "a reserved address (198.51.100.0/24, documentation)"],
  ["203.0.113.0", 24, "a reserved address (203.0.113.0/24, documentation)"],
  ["224.0.0.0", 4, "a multicast address (224.0.0.0/4)"],
  ["240.0.0.0", 4, "a reserved address (240.0.0.0/4, broadcast included)"],
];

const IPV6_RANGES: readonly Range[] = [
  ["::", 128, "an unspecified address (::)"],
  ["::1", 128, "a loopback address (::1)"],
  ["64:ff9b:1::", 48, "a reserved address (64:ff9b:1::/48, local-use NAT64)"],
  ["100::", 64, "a reserved address (100::/64, discard-only)"],
  ["2001:db8::", 32, "a reserved address (2001:db8::/32, documentation)"],
  ["2001::", 23, "a reserved address (2001::/23, IETF protocol assignments and Teredo)"],
  ["3fff::", 20, "a reserved address (3fff::/20, documentation)"],
  ["5f00::", 16, "a reserved address (5f00::/16, segment routing)"],
  ["fc00::", 7, "a unique-local address (fc00::/7)"],
  ["fe80::", 10, "a link-local address (fe80::/10)"],
  ["fec0::", 10, "a site-local address (fec0::/10)"],
  ["ff00::", 8, "a multicast address (ff00::/8)"],
];

// IPv6 ranges that carry an IPv4 address, judged by that address: [network, prefix, bit offset of the IPv4 address].
const EMBEDDING_V4: readonly (readonly [network: string, bits: number, at: number, what: string])[] = [
  ["::ffff:0:0", 96, 96, "an IPv4-mapped address"],
  ["::", 96, 96, "an IPv4-compatible address"],
  ["::ffff:0:0:0", 96, 96, "an IPv4-translated address"],
  ["64:ff9b::", 96, 96, "a NAT64 address"],
  ["2002::", 16, 16, "a 6to4 address"],
];

/**
 * Why an IP address is not on the public internet ("a loopback address (127.0.0.0/8)"), or undefined for a
 * public one. IPv6 addresses that embed an IPv4 address (::ffff:127.0.0.1, 64:ff9b::a00:1, 2002:7f00:1::) are
 * judged by it; anything outside IPv6's global unicast space 2000::/3 counts as reserved. Not an IP: reserved.
 */
export function privateAddressReason(address: string): string | undefined {
  const bare = address.replace(/^\[|\]$/g, "").replace(/%.*$/, "");
  if (isIPv4(bare)) return matching(IPV4_RANGES, toBigInt(bare), 32);
  if (!isIPv6(bare)) return `not an IP address (${address})`;
  const value = toBigInt(bare);
  const exact = matching(IPV6_RANGES.slice(0, 2), value, 128);
  if (exact) return exact;
  for (const [network, bits, at, what] of EMBEDDING_V4) {
    if (!inRange(value, toBigInt(network), bits, 128)) continue;
    const embedded = fromBigInt4((value >> BigInt(128 - at - 32)) & 0xffff_ffffn);
    const reason = privateAddressReason(embedded);
    // An IPv4-compatible address is deprecated: refused even when what it embeds is public.
    if (reason || network === "::") return `${what} of ${embedded}${reason ? `, ${reason}` : ""}`;
    return undefined;
  }
  const named = matching(IPV6_RANGES, value, 128);
  if (named) return named;
  return inRange(value, toBigInt("2000::"), 3, 128) ? undefined : "a reserved address (outside 2000::/3, IPv6's global unicast space)";
}

function matching(ranges: readonly Range[], value: bigint, width: number): string | undefined {
  return ranges.find(([network, bits]) => inRange(value, toBigInt(network), bits, width))?.[2];
}

function inRange(value: bigint, network: bigint, bits: number, width: number): boolean {
  const shift = BigInt(width - bits);
  return value >> shift === network >> shift;
}

// A dotted-quad IPv4 or any valid IPv6 spelling (`::`, an IPv4 tail) as one number.
function toBigInt(address: string): bigint {
  if (isIPv4(address)) return address.split(".").reduce((sum, part) => (sum << 8n) | BigInt(Number(part)), 0n);
  const hextets = (text: string): number[] =>
    text === ""
      ? []
      : text.split(":").flatMap((group) => {
          if (!group.includes(".")) return [Number.parseInt(group, 16)];
          const [a = 0, b = 0, c = 0, d = 0] = group.split(".").map(Number);
          return [(a << 8) | b, (c << 8) | d];
        });
  const [head = "", tail] = address.split("::");
  const left = hextets(head);
  const right = tail === undefined ? [] : hextets(tail);
  const groups = tail === undefined ? left : [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  return groups.reduce((sum, group) => (sum << 16n) | BigInt(group), 0n);
}

function fromBigInt4(value: bigint): string {
  return [24n, 16n, 8n, 0n].map((shift) => String((value >> shift) & 0xffn)).join(".");
}

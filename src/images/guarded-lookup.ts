import { lookup as dnsLookup, type LookupAddress, type LookupAllOptions } from "node:dns";
import { isIP, type LookupFunction } from "node:net";
import { privateAddressReason } from "./private-address.js";

/** A host that is, or resolves to, an address off the public internet; fetchImage turns it into IMAGE_URL_REFUSED. */
export class PrivateAddressError extends Error {
  override name = "PrivateAddressError";
  constructor(
    readonly host: string,
    readonly address: string,
    readonly reason: string,
  ) {
    super(address === host ? `${host} is ${reason}` : `${host} resolves to ${address}, ${reason}`);
  }
}

export type Resolver = (
  hostname: string,
  options: LookupAllOptions,
  callback: (error: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void,
) => void;

const LOCALHOST = /(^|\.)localhost\.?$/i;

/**
 * Refuses a host from its spelling alone, before any connection: an IP literal (the URL parser has already turned
 * 2130706433, 0x7f000001, 0177.0.0.1 and 127.1 into 127.0.0.1) that is not public, or a `localhost` name.
 */
export function refuseLiteralHost(hostname: string): PrivateAddressError | undefined {
  const bare = hostname.replace(/^\[|\]$/g, "");
  if (LOCALHOST.test(bare)) return new PrivateAddressError(hostname, hostname, "a loopback name");
  if (!isIP(bare)) return undefined;
  const reason = privateAddressReason(bare);
  return reason === undefined ? undefined : new PrivateAddressError(hostname, hostname, reason);
}

/**
 * A `lookup` for net and http that resolves every address of a name and refuses the name if any of them is off the
 * public internet. It hands back only the addresses it checked, so the socket connects to a checked address: a DNS
 * answer that changes between check and connect (rebinding) cannot slip through. It runs for every connection.
 */
export function guardedLookup(resolve: Resolver = dnsLookup): LookupFunction {
  return (hostname, options, callback) => {
    const literal = refuseLiteralHost(hostname);
    if (literal) return callback(literal, "", 0);
    resolve(hostname, { ...options, all: true }, (error, addresses) => {
      if (error) return callback(error, "", 0);
      if (addresses.length === 0)
        return callback(Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: "ENOTFOUND" }), "", 0);
      for (const { address } of addresses) {
        const reason = privateAddressReason(address);
        if (reason !== undefined) return callback(new PrivateAddressError(hostname, address, reason), "", 0);
      }
      if (options.all) return callback(null, addresses);
      const [first] = addresses as [LookupAddress];
      callback(null, first.address, first.family);
    });
  };
}

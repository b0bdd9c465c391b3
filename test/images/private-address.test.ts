import { describe, expect, it } from "vitest";
import { privateAddressReason } from "../../src/images/private-address.js";

// Every address here is only classified: nothing is resolved or contacted.
const REFUSED: [address: string, reason: RegExp][] = [
  ["127.0.0.1", /^a loopback address/],
  ["127.255.255.254", /^a loopback address/],
  ["10.0.0.1", /^a private address \(10\.0\.0\.0\/8\)/],
  ["10.255.255.255", /^a private address/],
  ["172.16.0.1", /^a private address \(172\.16\.0\.0\/12\)/],
  ["172.31.255.255", /^a private address/],
  ["192.168.1.1", /^a private address \(192\.168\.0\.0\/16\)/],
  ["169.254.169.254", /^a link-local address .*cloud metadata/],
  ["169.254.0.1", /^a link-local address/],
  ["100.64.0.1", /^a shared address .*carrier-grade NAT/],
  ["100.127.255.255", /^a shared address/],
  ["0.0.0.0", /^an unspecified address/],
  ["0.1.2.3", /^an unspecified address/],
  ["192.0.0.8", /^a reserved address/],
  ["192.0.2.1", /^a reserved address .*documentation/],
  ["198.18.0.1", /^a reserved address .*benchmarking/],
  ["198.51.100.7", /^a reserved address/],
  ["203.0.113.9", /^a reserved address/],
  ["224.0.0.1", /^a multicast address/],
  ["239.255.255.250", /^a multicast address/],
  ["240.0.0.1", /^a reserved address/],
  ["255.255.255.255", /^a reserved address .*broadcast/],
  ["::", /^an unspecified address/],
  ["::1", /^a loopback address/],
  ["[::1]", /^a loopback address/],
  ["0:0:0:0:0:0:0:1", /^a loopback address/],
  ["::ffff:127.0.0.1", /^an IPv4-mapped address of 127\.0\.0\.1, a loopback address/],
  ["::ffff:7f00:1", /^an IPv4-mapped address of 127\.0\.0\.1/],
  ["[::ffff:7f00:1]", /^an IPv4-mapped address of 127\.0\.0\.1/],
  ["::ffff:a9fe:a9fe", /^an IPv4-mapped address of 169\.254\.169\.254, a link-local/],
  ["0:0:0:0:0:ffff:c0a8:101", /^an IPv4-mapped address of 192\.168\.1\.1/],
  ["::7f00:1", /^an IPv4-compatible address of 127\.0\.0\.1/],
  ["::808:808", /^an IPv4-compatible address of 8\.8\.8\.8$/],
  ["::ffff:0:7f00:1", /^an IPv4-translated address of 127\.0\.0\.1/],
  ["64:ff9b::a00:1", /^a NAT64 address of 10\.0\.0\.1/],
  ["64:ff9b:1::1", /^a reserved address .*NAT64/],
  ["2002:7f00:1::1", /^a 6to4 address of 127\.0\.0\.1/],
  ["2002:c0a8:101::", /^a 6to4 address of 192\.168\.1\.1/],
  ["fe80::1", /^a link-local address \(fe80::\/10\)/],
  ["fe80::1%eth0", /^a link-local address/],
  ["febf::1", /^a link-local address/],
  ["fc00::1", /^a unique-local address \(fc00::\/7\)/],
  ["fd12:3456:789a::1", /^a unique-local address/],
  ["fd00:ec2::254", /^a unique-local address/],
  ["fec0::1", /^a site-local address/],
  ["ff02::1", /^a multicast address/],
  ["2001:db8::1", /^a reserved address .*documentation/],
  ["2001:0:4136:e378:8000:63bf:3fff:fdd2", /^a reserved address .*Teredo/],
  ["100::1", /^a reserved address .*discard/],
  ["1::1", /^a reserved address .*outside 2000::\/3/],
  ["localhost", /^not an IP address/],
];

const PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "172.32.0.1", "172.15.255.255", "100.128.0.1", "169.253.0.1", "192.169.0.1"];
const PUBLIC_V6 = ["2606:4700:4700::1111", "2a00:1450:4001:81b::200e", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"];

describe("privateAddressReason", () => {
  it.each(REFUSED)("refuses %s", (address, reason) => {
    expect(privateAddressReason(address)).toMatch(reason);
  });

  it.each([...PUBLIC, ...PUBLIC_V6])("lets the public address %s through", (address) => {
    expect(privateAddressReason(address)).toBeUndefined();
  });
});

// Compares the numeric release part of a version ("2.13.0+cpu", "5.0.0rc1" → [2,13,0], [5,0,0]) to a minimum.
/** True when `version`'s release numbers are at or above `minimum`'s. @internal */
export function versionAtLeast(version: string, minimum: string): boolean {
  const have = releaseNumbers(version);
  const need = releaseNumbers(minimum);
  for (let index = 0; index < Math.max(have.length, need.length); index++) {
    const a = have[index] ?? 0;
    const b = need[index] ?? 0;
    if (a !== b) return a > b;
  }
  return true;
}

function releaseNumbers(version: string): number[] {
  const release = /^\s*v?(\d+(?:\.\d+)*)/.exec(version)?.[1] ?? "0";
  return release.split(".").map(Number);
}

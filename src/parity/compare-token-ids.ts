/** Where two token sequences first part: the index, and each side's id there (null where that side had ended). */
export interface TokenDifference {
  index: number;
  reference: number | null;
  sdk: number | null;
}

/** The greedy token ids of the SDK against the reference program's. */
export interface TokenComparison {
  ok: boolean;
  /** Tokens the reference generated. */
  referenceTokens: number;
  /** Tokens the SDK generated. */
  sdkTokens: number;
  /** Leading tokens both sides share. */
  identical: number;
  /** The first token where they differ; null when the check passes. */
  firstDifference: TokenDifference | null;
  /**
   * The SDK stopped at a stop id (`<end_of_utterance>`) where the reference's generate() went on: the SDK always
   * stops there, the blog's program only at the model's configured EOS. Its tokens up to the stop are the reference's.
   */
  sdkStoppedEarly: boolean;
}

/**
 * Greedy ids must be equal, up to the SDK's extra stop: the SDK's ids may be a prefix of the reference's that ends
 * in one of `stopIds` (the worker's EOS ids, which include `<end_of_utterance>`).
 */
export function compareTokenIds(reference: readonly number[], sdk: readonly number[], stopIds: readonly number[] = []): TokenComparison {
  let identical = 0;
  while (identical < reference.length && identical < sdk.length && reference[identical] === sdk[identical]) identical++;
  const equal = identical === reference.length && identical === sdk.length;
  const last = sdk.at(-1);
  const sdkStoppedEarly = !equal && identical === sdk.length && last !== undefined && stopIds.includes(last);
  const ok = equal || sdkStoppedEarly;
  return {
    ok,
    referenceTokens: reference.length,
    sdkTokens: sdk.length,
    identical,
    firstDifference: ok ? null : { index: identical, reference: reference[identical] ?? null, sdk: sdk[identical] ?? null },
    sdkStoppedEarly,
  };
}

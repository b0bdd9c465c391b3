import { ProtocolError } from "../errors.js";
import { InboundFrame, PROTOCOL_VERSION } from "../protocol/messages.js";

/** Parses a header the worker sent; anything that is not a frame of this protocol version is a ProtocolError. */
export function readInboundFrame(header: unknown): InboundFrame | ProtocolError {
  const parsed = InboundFrame.safeParse(header);
  if (!parsed.success) {
    return new ProtocolError("PROTOCOL_ERROR", `The worker sent a frame that is not the protocol: ${JSON.stringify(header).slice(0, 200)}`);
  }
  const frame = parsed.data;
  if (frame.type === "ready" && frame.protocol !== PROTOCOL_VERSION) {
    return new ProtocolError("PROTOCOL_ERROR", `The worker speaks protocol ${frame.protocol}, this SDK ${PROTOCOL_VERSION}`, {
      fix: "The worker package and the SDK come from different versions; reinstall idefics2.",
    });
  }
  return frame;
}

import { beforeAll, afterAll, describe, expect, it } from "vitest";
import { embeddedModelPath } from "../../src/embedded-model.js";
import { assistant, image, system, user, type Messages } from "../../src/messages.js";
import { Idefics2 } from "../../src/model.js";
import { demoFirst, demoSecond, squarePicture } from "../helpers/pictures.js";
import { testPython } from "../helpers/python.js";
import { runReference } from "../helpers/reference.js";

const MAX_NEW_TOKENS = 24;

interface Case {
  name: string;
  messages: Messages;
  images: () => string[];
}

let third = "";
const cases: Case[] = [
  {
    name: "the blog's two-image conversation",
    messages: [
      user(image(), "What do we see in this image?"),
      assistant("In this image, we can see a red circle."),
      user(image(), "And how about this image? Which colour is that?"),
    ],
    images: () => [demoFirst, demoSecond],
  },
  { name: "one image", messages: [user(image(), "What colour is the shape?")], images: () => [demoSecond] },
  { name: "no image", messages: [user("Hello! What can you tell me about New York?")], images: () => [] },
  {
    name: "three images",
    messages: [
      user(image(), "What do we see in this image?"),
      assistant("In this image, we can see a red circle."),
      user(image(), image(), "And how about the last image? Which colour is that?"),
    ],
    images: () => [demoFirst, demoSecond, third],
  },
  {
    name: "a system turn",
    messages: [system("Answer in one short sentence."), user(image(), "What colour is the shape?")],
    images: () => [third],
  },
];

beforeAll(async () => {
  third = await squarePicture([40, 170, 60], "green-square.png");
});

describe.each(["none", "8bit", "4bit"] as const)("token parity with scripts/reference/reference.py, quantization %s", (quantization) => {
  let model: Idefics2;
  let unsplit: Idefics2;
  beforeAll(async () => {
    model = await Idefics2.load({ quantization, python: testPython() });
    unsplit = await Idefics2.load({ quantization, python: testPython(), imageSplitting: false });
  });
  afterAll(async () => {
    await model?.close();
    await unsplit?.close();
  });

  it.each(cases)("gives the reference's token ids for $name", async ({ messages, images }) => {
    const [reference, sdk] = await Promise.all([
      runReference({ model: embeddedModelPath, messages, images: images(), quantization, maxNewTokens: MAX_NEW_TOKENS }),
      model.generate(messages, { images: images(), maxNewTokens: MAX_NEW_TOKENS }),
    ]);
    expect(reference.tokenIds.length).toBeGreaterThan(0);
    expect(sdk.tokenIds).toEqual(reference.tokenIds);
    expect(sdk.text).toBe(reference.text);
  });

  it("gives the reference's token ids with image splitting off", async () => {
    const { messages, images } = cases[0] as Case;
    const [reference, sdk] = await Promise.all([
      runReference({
        model: embeddedModelPath,
        messages,
        images: images(),
        quantization,
        maxNewTokens: MAX_NEW_TOKENS,
        imageSplitting: false,
      }),
      unsplit.generate(messages, { images: images(), maxNewTokens: MAX_NEW_TOKENS }),
    ]);
    expect(sdk.tokenIds).toEqual(reference.tokenIds);
    // Splitting multiplies image tokens by 5: with it off the prompt carries a fifth of them.
    const split = await model.generate(messages, { images: images(), maxNewTokens: 1 });
    expect(split.usage.imageTokens).toBe(5 * sdk.usage.imageTokens);
  });
});

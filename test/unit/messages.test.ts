import { describe, expect, expectTypeOf, it } from "vitest";
import type { ImageSource } from "../../src/images/image-source.js";
import { assistant, image, Message, system, text, user } from "../../src/messages.js";

describe("message builders", () => {
  it("yield exactly the blog's message structure", () => {
    const messages = [
      user(image(), "What do we see in this image?"),
      assistant("In this image, we can see the city of New York, and more specifically the Statue of Liberty."),
      user(image(), "And how about this image? Which city is that?"),
    ];
    expect(messages).toEqual([
      { role: "user", content: [{ type: "image" }, { type: "text", text: "What do we see in this image?" }] },
      {
        role: "assistant",
        content: [{ type: "text", text: "In this image, we can see the city of New York, and more specifically the Statue of Liberty." }],
      },
      { role: "user", content: [{ type: "image" }, { type: "text", text: "And how about this image? Which city is that?" }] },
    ]);
  });

  it("carry an image source on the part when one is given, and accept text() parts", () => {
    const bytes = new Uint8Array([1, 2, 3]);
    expect(user(image("./a.jpg"), text("x"), image(bytes))).toEqual({
      role: "user",
      content: [
        { type: "image", source: "./a.jpg" },
        { type: "text", text: "x" },
        { type: "image", source: bytes },
      ],
    });
    expect(system("Be brief.")).toEqual({ role: "system", content: [{ type: "text", text: "Be brief." }] });
  });

  it("never share the caller's part objects", () => {
    const part = text("hello");
    const message = user(part);
    expect(message.content[0]).not.toBe(part);
    expect(message.content[0]).toEqual(part);
  });

  it("validate against the exported schema, which refuses unknown roles and keys", () => {
    expect(Message.safeParse(user("hi")).success).toBe(true);
    expect(Message.safeParse({ role: "robot", content: [{ type: "text", text: "hi" }] }).success).toBe(false);
    expect(Message.safeParse({ role: "user", content: [{ type: "text", txt: "hi" }] }).success).toBe(false);
    expect(Message.safeParse({ role: "user", content: [] }).success).toBe(false);
  });

  it("are typed as Message", () => {
    expectTypeOf(user("x")).toEqualTypeOf<Message>();
    expectTypeOf(image).parameter(0).toEqualTypeOf<ImageSource | undefined>();
  });
});

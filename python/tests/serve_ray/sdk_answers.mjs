// The blog's conversation answered by the local SDK (the embedded model in this process) and by connect() against a
// base URL (argv[2]): greedy, whole and streamed. Prints one JSON object. Run by test_ray_serve.py.
import { assistant, connect, demoAssetsPath, embeddedModelPath, Idefics2, image, user } from "../../../dist/index.js";

const [baseURL, maxNewTokens] = [process.argv[2], Number(process.argv[3])];
const demo = demoAssetsPath;
const blog = [
  user(image(`${demo}/first.png`), "What do we see in this image?"),
  assistant("In this image, we can see a red circle."),
  user(image(`${demo}/second.jpg`), "And how about this image? Which colour is that?"),
];
const pick = (result) => ({ text: result.text, tokenIds: result.tokenIds, finishReason: result.finishReason });

const local = await Idefics2.load({ model: embeddedModelPath, python: process.env.IDEFICS2_PYTHON });
const here = pick(await local.generate(blog, { maxNewTokens }));
await local.close();
const remote = await connect({ baseURL, apiKey: "none" });
const whole = pick(await remote.generate(blog, { maxNewTokens }));
const stream = remote.stream(blog, { maxNewTokens });
let streamedText = "";
for await (const piece of stream) streamedText += piece;
const streamed = { ...pick(await stream.result), streamedText };
await remote.close();
process.stdout.write(`${JSON.stringify({ local: here, remote: whole, streamed })}\n`);

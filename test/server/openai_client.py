"""The OpenAI Python client against idefics2 serve (argv: base URL, API key, then picture URLs).

For each picture URL: the blog's conversation with it as the second picture, answered whole and streamed. Then
one request the server refuses, and one structured answer parsed into a pydantic model (the first picture URL).
Prints one JSON object.
"""

import base64
import json
import sys
from pathlib import Path
from typing import Literal

import openai
from openai import OpenAI
from pydantic import BaseModel

Q1 = "What do we see in this image?"
A1 = "In this image, we can see a red circle."
Q2 = "And how about this image? Which colour is that?"


class Shape(BaseModel):
    colour: Literal["red", "green", "blue", "yellow"]
    size: Literal["small", "big"]


def blog(first: str, second_url: str) -> list:
    first_url = "data:image/png;base64," + base64.b64encode(Path(first).read_bytes()).decode()
    return [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": first_url}}, {"type": "text", "text": Q1}],
        },
        {"role": "assistant", "content": A1},
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": second_url}}, {"type": "text", "text": Q2}],
        },
    ]


def main() -> None:
    base_url, api_key, first, *second_urls = sys.argv[1:]
    client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
    answers = []
    for url in second_urls:
        messages = blog(first, url)
        whole = client.chat.completions.create(model="tiny-idefics2", messages=messages, max_tokens=40)
        choice = whole.choices[0]
        text, token_ids, finish, usage = "", None, None, None
        stream = client.chat.completions.create(
            model="tiny-idefics2", messages=messages, max_tokens=40, stream=True, stream_options={"include_usage": True}
        )
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage.model_dump()
            for streamed in chunk.choices:
                text += streamed.delta.content or ""
                finish = streamed.finish_reason or finish
                ids = (streamed.model_extra or {}).get("token_ids")
                if ids is not None:
                    token_ids = ids
        answers.append(
            {
                "text": choice.message.content,
                "tokenIds": (choice.model_extra or {}).get("token_ids"),
                "finishReason": choice.finish_reason,
                "usage": whole.usage.model_dump() if whole.usage else None,
                "imageTokens": (whole.model_extra or {}).get("idefics2", {}).get("image_tokens"),
                "streamedText": text,
                "streamedTokenIds": token_ids,
                "streamedFinishReason": finish,
                "streamedUsage": usage,
            }
        )
    try:
        client.chat.completions.create(model="tiny-idefics2", messages=blog(first, second_urls[0]), n=2)
        refused = None
    except openai.BadRequestError as error:
        refused = {"status": error.status_code, "body": error.body}
    shape = client.chat.completions.parse(
        model="tiny-idefics2",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": second_urls[0]}},
                    {"type": "text", "text": "Describe the shape as JSON."},
                ],
            }
        ],
        response_format=Shape,
        max_tokens=60,
    )
    message = shape.choices[0].message
    structured = {
        "content": message.content,
        "parsed": message.parsed.model_dump() if message.parsed else None,
        "finishReason": shape.choices[0].finish_reason,
    }
    print(json.dumps({"answers": answers, "refused": refused, "structured": structured}))


if __name__ == "__main__":
    main()

"""Writes PIL-made image fixtures into a folder, then reads every file there the way the reference does.

Usage: python pil-reference.py FOLDER  — prints one JSON object: {file name: {width, height, rgb (base64)}}.
"""

import base64
import json
import os
import random
import sys
import warnings
from pathlib import Path

from PIL import Image
from transformers.image_utils import load_image

W, H = 53, 37  # odd sizes exercise chroma subsampling at the edges


def noisy_rgb() -> Image.Image:
    # A smooth gradient plus noise: JPEG rounding differences show up, flat images would hide them.
    rng = random.Random(7)
    image = Image.new("RGB", (W, H))
    image.putdata(
        [
            ((x * 5 + rng.randrange(40)) % 256, (y * 7 + rng.randrange(40)) % 256, (x * y + rng.randrange(40)) % 256)
            for y in range(H)
            for x in range(W)
        ]
    )
    return image


def with_alpha(image: Image.Image) -> Image.Image:
    rng = random.Random(11)
    alpha = Image.new("L", image.size)
    alpha.putdata([rng.choice([0, 0, 64, 128, 255]) for _ in range(image.width * image.height)])
    rgba = image.convert("RGBA")
    rgba.putalpha(alpha)
    return rgba


def make(folder: str) -> None:
    rgb = noisy_rgb()
    gray = rgb.convert("L")

    def path(name: str) -> str:
        return os.path.join(folder, name)

    rgb.save(path("pil-baseline-420.jpg"), quality=90, subsampling=2)
    rgb.save(path("pil-444.jpg"), quality=90, subsampling=0)
    rgb.save(path("pil-422.jpg"), quality=90, subsampling=1)
    rgb.save(path("pil-progressive.jpg"), quality=85, progressive=True)
    gray.save(path("pil-gray.jpg"), quality=90)
    rgb.convert("CMYK").save(path("pil-cmyk.jpg"), quality=95)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        rgb.save(path(f"pil-orientation-{orientation}.jpg"), quality=90, exif=exif)

    rgb.save(path("pil-rgb.png"))
    with_alpha(rgb).save(path("pil-rgba.png"))
    with_alpha(gray.convert("RGB")).convert("LA").save(path("pil-la.png"))
    gray.save(path("pil-gray.png"))
    gray.point(lambda v: 255 if v > 128 else 0).convert("1").save(path("pil-bilevel.png"))
    palette = rgb.quantize(colors=200)
    palette.save(path("pil-palette.png"))
    palette.save(path("pil-palette-trns.png"), transparency=bytes(range(0, 250, 5)) + b"\xff" * 150)
    gray.save(path("pil-gray-trns.png"), transparency=77)
    rgb.save(path("pil-rgb-trns.png"), transparency=(12, 34, 56))
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb.save(path("pil-orientation-6.png"), exif=exif)
    sixteen = Image.new("I;16", (W, H))
    sixteen.putdata([(i * 97) % 65536 for i in range(W * H)])
    sixteen.save(path("pil-gray16.png"))
    small16 = Image.new("I;16", (W, H))
    small16.putdata([i % 300 for i in range(W * H)])
    small16.save(path("pil-gray16-small.png"))
    small16.save(path("pil-gray16-trns.png"), transparency=100)

    rgb.save(path("pil-lossy.webp"), quality=80)
    rgb.save(path("pil-lossless.webp"), lossless=True)
    with_alpha(rgb).save(path("pil-lossy-alpha.webp"), quality=80)
    with_alpha(rgb).save(path("pil-lossless-alpha.webp"), lossless=True)
    rgb.save(path("pil-orientation-6.webp"), quality=80, exif=exif)
    second = rgb.transpose(Image.Transpose.ROTATE_180)
    rgb.save(path("pil-animated.webp"), save_all=True, append_images=[second], duration=100, lossless=True)

    palette.save(path("pil-static.gif"))
    palette.save(path("pil-transparent.gif"), transparency=3)
    palette.save(
        path("pil-animated.gif"), save_all=True, append_images=[second.quantize(colors=50)], duration=100, loop=0
    )
    gray.save(path("pil-gray.gif"))
    # A first frame smaller than the logical screen: enlarge the screen in the header.
    for name in ("pil-static.gif", "pil-transparent.gif"):
        data = bytearray(Path(path(name)).read_bytes())
        data[6:10] = (W + 7).to_bytes(2, "little") + (H + 8).to_bytes(2, "little")
        Path(path(name.replace("pil-", "pil-partial-"))).write_bytes(bytes(data))
    # libjpeg warns about bytes before the end marker, and PIL decodes the picture anyway.
    jpeg = Path(path("pil-baseline-420.jpg")).read_bytes()
    Path(path("pil-extraneous-bytes.jpg")).write_bytes(jpeg[:-2] + b"\x00\x00\x00" + jpeg[-2:])


def read(folder: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in sorted(os.listdir(folder)):
        try:
            image = load_image(os.path.join(folder, name))
            out[name] = {
                "width": image.width,
                "height": image.height,
                "rgb": base64.b64encode(image.tobytes()).decode(),
            }
        except Exception as error:  # noqa: BLE001 - reported to the test, which decides
            out[name] = {"error": f"{type(error).__name__}: {error}"}
    return out


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    make(sys.argv[1])
    json.dump(read(sys.argv[1]), sys.stdout)

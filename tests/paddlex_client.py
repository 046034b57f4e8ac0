"""A client written the way PaddleX's serving docs write one for human_keypoint_detection.

It knows nothing about streampose: if it works against ``streampose serve``, PaddleX users'
clients do too. Standard library only (the docs use ``requests``; the calls are the same).

    python tests/paddlex_client.py --url http://127.0.0.1:8080 --image demo.jpg --output out.jpg
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import urllib.request


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://localhost:8080")
    parser.add_argument("--image", default="./demo.jpg")
    parser.add_argument("--output", default="./out.jpg")
    args = parser.parse_args()

    api_url = args.url.rstrip("/") + "/human-keypoint-detection"
    with open(args.image, "rb") as file:
        image_bytes = file.read()
        image_data = base64.b64encode(image_bytes).decode("ascii")

    payload = {"image": image_data}
    request = urllib.request.Request(api_url, data=json.dumps(payload).encode("utf-8"),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 200
        result = json.loads(response.read())["result"]

    with open(args.output, "wb") as file:
        file.write(base64.b64decode(result["image"]))
    print(f"Output image saved at {args.output}")
    print("\nDetected persons:")
    print(result["persons"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Hugging Face Inference Endpoints handler of a faceptor-hf release.

``faceptor_hf.hub.save_release(folder, model, processor, endpoint_handler=True)`` copies this file into the release
as ``handler.py`` (with a ``requirements.txt`` naming the detector weights); Inference Endpoints then builds
``EndpointHandler(path)`` once and calls it per request with the request's JSON, where the release's own pipeline code
runs (``trust_remote_code``), so faceptor-hf need not be installed there.

    {"inputs": <image>, "parameters": {...}}                 -> the photo's faces (a list of dicts)
    {"inputs": {"image_a": <image>, "image_b": <image>}, "parameters": {...}}  -> the verification result

An image is what the endpoint received: a PIL image (an ``image/*`` request body), bytes, or a base64 string or
``data:`` URI in JSON. ``parameters`` are the face-analysis pipeline's options (``tasks``, ``max_faces``, ...;
``mask_format`` defaults to ``"rle"``), or ``verify``'s (``threshold``, ``task``, ``flip``, ``min_quality``).
A bad image or option raises ``ValueError`` or ``TypeError`` naming it, which the endpoint returns as the error.

Shipped with a release: imports only the standard library, PIL and transformers.
"""

import base64
import binascii

import PIL.Image
from transformers import pipeline

VERIFY_FIELDS = ("image_a", "image_b")


def request_image(value, name: str):
    """A request's image as the pipeline takes it. Strings are base64 (or ``data:`` URIs), never paths or URLs: a
    request must not make the endpoint read its files or fetch from the network."""
    if isinstance(value, (PIL.Image.Image, bytes, bytearray)):
        return value
    if isinstance(value, str):
        text = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as error:
            raise ValueError(f"{name}: not valid base64 ({error})") from error
    raise TypeError(f"{name}: expected an image (bytes, or a base64 string), got {type(value).__name__}")


class EndpointHandler:
    """Face analysis for Inference Endpoints: ``EndpointHandler(path)(data)``, see the module docstring."""

    def __init__(self, path: str = ""):
        self.pipe = pipeline(model=path or ".", trust_remote_code=True)

    def __call__(self, data: dict):
        if not isinstance(data, dict) or "inputs" not in data:
            raise ValueError("the request must be a JSON object with 'inputs' (and optionally 'parameters')")
        inputs, parameters = data["inputs"], data.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise TypeError(f"parameters must be an object, got {type(parameters).__name__}")
        if isinstance(inputs, dict):
            unknown = sorted(set(inputs) - set(VERIFY_FIELDS))
            missing = [name for name in VERIFY_FIELDS if name not in inputs]
            if unknown or missing:
                raise ValueError(f"verification inputs are {list(VERIFY_FIELDS)}; got {sorted(inputs)}")
            images = [request_image(inputs[name], name) for name in VERIFY_FIELDS]
            return self.pipe.verify(*images, **parameters)
        return self.pipe(request_image(inputs, "inputs"), **{"mask_format": "rle", **parameters})

"""transformers' stock ``pipeline("image-feature-extraction")`` on a saved Faceptor model: ``pool=True`` gives the
L2-normalized recognition embedding (``FaceptorOutput.pooler_output``), no ``pool`` the encoder tokens of the
112-px input (``last_hidden_state``, ``output[0]``)."""

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import pipeline

from faceptor_hf import FaceptorImageProcessor, FaceptorModel

from conftest import IMAGES, tiny_config, tiny_inputs


@pytest.fixture(scope="module")
def aligned_crop() -> PIL.Image.Image:
    """The astronaut's face aligned to the ArcFace 112-px template by the processor, as an RGB image."""
    processor = FaceptorImageProcessor()
    keypoints = [[204.7, 101.0], [247.3, 103.4], [223.6, 129.4], [202.6, 138.2], [244.4, 140.4]]
    crop = processor(str(IMAGES / "astronaut.png"), face_keypoints=[keypoints],
                     return_dense_pixel_values=False)["pixel_values"][0]
    pixels = ((crop.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    return PIL.Image.fromarray(pixels)


def test_stock_pipeline_pools_the_embedding_and_returns_encoder_tokens(checkpoint, aligned_crop):
    extractor = pipeline("image-feature-extraction", model=str(checkpoint))
    model, processor = extractor.model, extractor.image_processor
    # the stock pipeline calls the processor on the crop alone: no keypoints = the image is the aligned face
    inputs = processor(aligned_crop, return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, 112, 112)
    with torch.no_grad():
        expected = model(pixel_values=inputs["pixel_values"], output_hidden_states=True)

    pooled = np.array(extractor(aligned_crop, pool=True))
    assert pooled.shape == (1, 512)
    assert abs(np.linalg.norm(pooled[0]) - 1) < 1e-5
    raw = expected.task_logits["recog_ms1mv3"][0]
    np.testing.assert_allclose(pooled[0], (raw / raw.norm()).numpy(), atol=1e-6)

    tokens = extractor(aligned_crop, return_tensors=True)
    width = model.config.hidden_size
    assert tokens.shape == (1, 1 + 7 * 7, width)
    torch.testing.assert_close(tokens, expected.hidden_states[-1])

    # Without the 512-px crops (image_processor_kwargs) only the 112-px tasks run: the same features.
    fast = pipeline("image-feature-extraction", model=str(checkpoint),
                    image_processor_kwargs={"return_dense_pixel_values": False})
    np.testing.assert_allclose(np.array(fast(aligned_crop, pool=True)), pooled, atol=1e-6)
    batch = fast([aligned_crop, aligned_crop.transpose(PIL.Image.Transpose.FLIP_LEFT_RIGHT)], pool=True)
    assert len(batch) == 2 and np.array(batch[0]).shape == (1, 512)


def test_output_fields_and_their_order():
    torch.manual_seed(0)
    model = FaceptorModel(tiny_config()).eval()
    x112, x512 = tiny_inputs()
    with torch.no_grad():
        out = model(pixel_values=x112, dense_pixel_values=x512, output_hidden_states=True)
        as_tuple = model(pixel_values=x112, dense_pixel_values=x512, return_dict=False)
        encoder_only = model(pixel_values=x112, tasks=[])
        dense_only = model(dense_pixel_values=x512)
        age_only = model(pixel_values=x112, tasks=["age_tiny"])
    torch.testing.assert_close(out.last_hidden_state, out.hidden_states[-1])
    assert out[0] is out.last_hidden_state  # what the stock pipeline reads without pool
    torch.testing.assert_close(as_tuple[0], out.last_hidden_state)
    torch.testing.assert_close(as_tuple[1], out.pooler_output)
    torch.testing.assert_close(out.pooler_output, torch.nn.functional.normalize(out.task_logits["recog_ms1mv3"]))
    assert out.pooler_output.shape == (2, 8)
    # no task: the encoder alone gives the tokens; no recognition task: no pooled embedding
    torch.testing.assert_close(encoder_only.last_hidden_state, out.last_hidden_state)
    assert encoder_only.pooler_output is None and encoder_only.task_logits == {}
    assert age_only.pooler_output is None and age_only.last_hidden_state is not None
    assert dense_only.last_hidden_state is None and dense_only.pooler_output is None
    assert isinstance(dense_only[0], dict)  # task_logits come first when neither is set


def test_last_hidden_state_costs_no_extra_blocks():
    """A config whose 112-px heads read block 1 of 4 stops there: no tokens of the last block, no extra work."""
    config = tiny_config(tasks=[{"name": "recog_ms1mv3", "embedding_size": 8}, "biattr_celeba"],
                         recognition_layer=1, decoder_levels=[1])
    model = FaceptorModel(config).eval()
    calls = []
    for layer in model.encoder.layers:
        layer.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        out = model(pixel_values=tiny_inputs()[0])
    assert len(calls) == 2 and out.last_hidden_state is None and out.pooler_output.shape == (2, 8)
    calls.clear()
    with torch.no_grad():
        encoder_only = model(pixel_values=tiny_inputs()[0], tasks=[])
    assert len(calls) == 4 and encoder_only.last_hidden_state.shape == (2, 50, config.hidden_size)

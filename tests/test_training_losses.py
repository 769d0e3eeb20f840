"""Training losses against hand computations on tiny inputs (explicit loops over plain Python numbers), the
registry's loss parts, and the official loss weighting."""

import dataclasses
import math

import pytest
import torch

from faceptor_hf.configuration_faceptor import FACEPTOR_BASE_TASKS, OFFICIAL_TASKS, make_task
from faceptor_hf.task_types import TASK_TYPES, attach_task_part, get_task_type
from faceptor_hf.training import losses


def sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


def cross_entropy(logits: list[float], label: int) -> float:
    top = max(logits)
    return -(logits[label] - top - math.log(sum(math.exp(v - top) for v in logits)))


def bce(logit: float, target: float) -> float:
    return -(target * math.log(sigmoid(logit)) + (1 - target) * math.log(1 - sigmoid(logit)))


# ---- CosFace ---------------------------------------------------------------------------------------------------
def test_cosface_on_a_known_margin_case():
    # x points exactly at class 0: cos = (1, 0); logits 64 * (1 - 0.4) = 38.4 for the true class, 0 for the other.
    weight = torch.tensor([[3.0, 0.0], [0.0, 0.5]])
    loss = losses.cosface_loss(torch.tensor([[2.0, 0.0]]), weight, torch.tensor([0]))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-38.4)), rel=1e-5)
    # labeled as class 1 instead: true logit 64 * (0 - 0.4) = -25.6 against 64 for class 0
    loss = losses.cosface_loss(torch.tensor([[2.0, 0.0]]), weight, torch.tensor([1]))
    assert loss.item() == pytest.approx(cross_entropy([64.0, -25.6], 1), rel=1e-6)


def test_cosface_matches_a_loop_computation():
    generator = torch.Generator().manual_seed(1)
    x, weight = torch.randn(3, 4, generator=generator), torch.randn(5, 4, generator=generator)
    labels = [4, 0, 2]
    expected = 0.0
    for i in range(3):
        row = []
        for k in range(5):
            dot = sum(x[i, d].item() * weight[k, d].item() for d in range(4))
            norms = math.sqrt(sum(v.item() ** 2 for v in x[i])) * math.sqrt(sum(v.item() ** 2 for v in weight[k]))
            row.append(30.0 * (dot / norms - (0.2 if k == labels[i] else 0.0)))
        expected += cross_entropy(row, labels[i]) / 3
    loss = losses.cosface_loss(x, weight, torch.tensor(labels), scale=30.0, margin=0.2)
    assert loss.dtype == torch.float32 and loss.ndim == 0
    assert loss.item() == pytest.approx(expected, rel=1e-5)


# ---- age (DLDL-v2) ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("age", [0.0, 30.0, 30.5, 100.0])
def test_age_distribution_is_the_normalized_gaussian(age):
    distribution = losses.age_label_distribution(torch.tensor([age]))[0]
    pdf = [math.exp(-(k - age) ** 2 / 8) / (math.sqrt(2 * math.pi) * 2) for k in range(101)]
    assert distribution.sum().item() == pytest.approx(1.0, abs=1e-6)
    for k in range(101):
        assert distribution[k].item() == pytest.approx(pdf[k] / sum(pdf), abs=1e-7)
    if age == 30.5:  # unrounded: symmetric about 30.5, not peaked at an integer
        assert distribution[30].item() == pytest.approx(distribution[31].item(), rel=1e-6)


def test_age_loss_is_kl_plus_l1_of_the_normalized_sigmoid():
    logits = torch.tensor([[0.5, -1.0, 2.0, 0.0, -0.5], [1.0, 1.0, -2.0, 0.3, 0.7]])
    ages = [1.0, 3.5]
    kl, l1 = 0.0, 0.0
    for b in range(2):
        weights = [sigmoid(v.item()) for v in logits[b]]
        p = [w / sum(weights) for w in weights]
        pdf = [math.exp(-(k - ages[b]) ** 2 / (2 * 1.5**2)) for k in range(5)]
        q = [v / sum(pdf) for v in pdf]
        kl += sum(q[k] * (math.log(q[k]) - math.log(p[k])) for k in range(5) if q[k] > 0) / 2
        l1 += abs(sum(k * p[k] for k in range(5)) - ages[b]) / 2
    loss = losses.age_loss(logits, torch.tensor(ages), sigma=1.5)
    assert loss.item() == pytest.approx(kl + l1, rel=1e-5)


# ---- attributes, expression, parsing ----------------------------------------------------------------------------
def test_attribute_loss_masks_unknowns_and_divides_by_batch():
    logits = torch.tensor([[0.3, -1.2, 2.0], [-0.4, 0.9, 0.0]])
    targets = torch.tensor([[1, 0, -1], [-1, 1, 0]], dtype=torch.int8)
    expected = sum(bce(logits[b, a].item(), targets[b, a].item())
                   for b in range(2) for a in range(3) if targets[b, a] != -1) / 2
    assert losses.attribute_loss(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    changed = logits.clone()
    changed[0, 2], changed[1, 0] = 50.0, -50.0  # only masked entries change
    assert losses.attribute_loss(changed, targets).item() == pytest.approx(expected, rel=1e-6)


def test_expression_loss_is_mean_cross_entropy():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    expected = (cross_entropy([1.0, 2.0, 0.5], 2) + cross_entropy([0.0, -1.0, 3.0], 0)) / 2
    assert losses.expression_loss(logits, torch.tensor([2, 0])).item() == pytest.approx(expected, rel=1e-6)


def test_parsing_loss_upsamples_bilinearly_then_averages_pixel_cross_entropy():
    logits = torch.tensor([[[[1.0, -1.0], [0.5, 2.0]], [[0.0, 0.3], [-0.7, 1.0]]]])  # (1, C=2, 2, 2)
    masks = torch.tensor([[[0, 1, 1, 0], [1, 0, 0, 1], [0, 0, 1, 1], [1, 1, 0, 0]]])
    # 2 -> 4 bilinear, align_corners=False: sample positions -0.25, 0.25, 0.75, 1.25 clamped to the edge pixels
    taps = [[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]]
    total = 0.0
    for y in range(4):
        for x in range(4):
            pixel = [sum(taps[y][i] * taps[x][j] * logits[0, c, i, j].item() for i in range(2) for j in range(2))
                     for c in range(2)]
            total += cross_entropy(pixel, masks[0, y, x].item())
    assert losses.parsing_loss(logits, masks).item() == pytest.approx(total / 16, rel=1e-6)


# ---- landmarks ---------------------------------------------------------------------------------------------------
def test_heatmap_target_painting_radius_and_values():
    # crop point p lands on heatmap pixel (p + 0.5) / 512 * 128 - 0.5: p = 41.5 -> pixel 10
    points = torch.tensor([[[41.5, 41.5]]])
    target = losses.landmark_heatmaps((points + 0.5) / 512, (128, 128), radius=5.0)[0, 0]
    assert target[10, 10].item() == 1.0
    assert target[10, 11].item() == pytest.approx(math.exp(-16 / 50), rel=1e-6)   # one pixel away
    assert target[10, 15].item() == pytest.approx(math.exp(-8), rel=1e-5)        # r = 5: still painted
    assert target[13, 14].item() == pytest.approx(math.exp(-8), rel=1e-5)        # r = 5 diagonally
    assert target[10, 16].item() == 0.0 and target[14, 14].item() == 0.0        # r = 6, r = 5.66
    assert int((target > 0).sum()) == 81  # integer offsets with dx^2 + dy^2 <= 25
    # a point half a pixel outside the map (u = -0.5, v = 63.5): only the in-map part is painted
    edge = losses.landmark_heatmaps(torch.tensor([[[0.0, 0.5]]]), (128, 128), 5.0)[0, 0]
    assert edge[64, 0].item() == pytest.approx(math.exp(-16 * 0.5 / 50), rel=1e-6) and edge[:, 5:].sum() == 0


def test_landmark_loss_is_centroid_distance_plus_heatmap_bce():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(1, 2, 8, 8, generator=generator) - 1
    points = torch.tensor([[[5.0, 9.0], [20.5, 13.0]]])  # pixel coords in a 32-px crop
    distance, bce_total = 0.0, 0.0
    for n in range(2):
        weights = [[sigmoid(logits[0, n, y, x].item()) for x in range(8)] for y in range(8)]
        mass = sum(map(sum, weights))
        cx = sum(x * weights[y][x] for y in range(8) for x in range(8)) / mass
        cy = sum(y * weights[y][x] for y in range(8) for x in range(8)) / mass
        gx, gy = (points[0, n, 0].item() + 0.5) / 32, (points[0, n, 1].item() + 0.5) / 32
        distance += math.hypot(gx - (cx + 0.5) / 8, gy - (cy + 0.5) / 8) / 2
        ux, uy = gx * 8 - 0.5, gy * 8 - 0.5
        for y in range(8):
            for x in range(8):
                r = math.hypot(x - ux, y - uy)
                target = math.exp(-r * r * 16 / (2 * 25)) if r <= 5 else 0.0
                bce_total += bce(logits[0, n, y, x].item(), target)
    loss = losses.landmark_loss(logits, points, crop_size=32, heatmap_radius=5.0, heatmap_size=8)
    assert loss.item() == pytest.approx(distance + bce_total / 128, rel=1e-5)


def test_losses_are_fp32_for_half_precision_inputs():
    logits = torch.randn(2, 7).to(torch.bfloat16)
    assert losses.expression_loss(logits, torch.tensor([1, 2])).dtype == torch.float32
    heatmaps = torch.randn(1, 2, 128, 128).to(torch.bfloat16)
    assert losses.landmark_loss(heatmaps, torch.rand(1, 2, 2) * 500).dtype == torch.float32


# ---- registry parts ---------------------------------------------------------------------------------------------
BUILT_IN_TYPES = ("recog", "age", "biattr", "affect", "classification", "regression", "parsing", "align")


def test_every_built_in_type_has_its_loss_once_training_is_imported():
    assert set(losses.LOSS_OF_TYPE) == set(BUILT_IN_TYPES)
    assert all(TASK_TYPES[name].loss is losses.LOSS_OF_TYPE[name] for name in BUILT_IN_TYPES)


def test_registry_parts_call_the_official_losses():
    generator = torch.Generator().manual_seed(0)
    recog = make_task("recog_ms1mv3", embedding_size=4)
    x, weight = torch.randn(3, 4, generator=generator), torch.randn(6, 4, generator=generator)
    labels = torch.tensor([0, 5, 2])
    part = get_task_type(recog).loss(recog, x, labels, {"classifier_weight": weight})
    assert part.item() == pytest.approx(losses.cosface_loss(x, weight, labels).item())
    with pytest.raises(KeyError, match="recog_ms1mv3.*classifier_weight"):
        get_task_type(recog).loss(recog, x, labels, {})
    align = make_task("align_x", type="align", num_queries=2)
    heatmaps, points = torch.randn(1, 2, 128, 128, generator=generator), torch.rand(1, 2, 2, generator=generator) * 500
    assert losses.task_loss(align, heatmaps, points).item() == pytest.approx(
        losses.landmark_loss(heatmaps, points, crop_size=512).item())
    regression = make_task("pose_x", type="regression", num_queries=2)
    values, wanted = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.5, 1.0]])
    assert losses.task_loss(regression, values, wanted).item() == pytest.approx((0.5 + 3.0) / 2)
    classes = make_task("hand_x", type="classification", labels=["left", "right"])
    assert losses.task_loss(classes, torch.tensor([[2.0, 0.0]]), torch.tensor([1])).item() == pytest.approx(
        cross_entropy([2.0, 0.0], 1), rel=1e-6)


def test_a_task_whose_type_has_no_loss_gets_a_clear_error():
    unknown = make_task("gaze_x", type="gaze", readout="value", num_queries=2)
    with pytest.raises(ValueError, match="gaze_x.*'gaze' has no loss.*attach_task_part"):
        losses.task_loss(unknown, torch.zeros(1, 2), torch.zeros(1, 2))
    # a copy of a built-in type is a new type: it brings its own loss (nothing depends on when it was made)
    copy = dataclasses.replace(TASK_TYPES["regression"], name="gaze_copy")
    with pytest.raises(LookupError, match="'gaze_copy' has no loss"):
        copy.loss
    with pytest.raises(KeyError, match="unknown task type 'never_registered'"):
        attach_task_part("never_registered", "loss", losses.value_regression_loss)


# ---- weighting ---------------------------------------------------------------------------------------------------
def test_combine_task_losses_is_the_weighted_mean_over_present_tasks():
    values = {"a": torch.tensor(2.0), "b": torch.tensor(10.0)}
    weights = {"a": 3.0, "b": 1.0, "absent": 100.0}
    assert losses.combine_task_losses(values, weights).item() == pytest.approx((3 * 2 + 10) / 4)
    with pytest.raises(KeyError, match=r"\['b'\]"):
        losses.combine_task_losses(values, {"a": 1.0})


def test_official_loss_weights_reproduce_the_recipes():
    base = losses.official_loss_weights(FACEPTOR_BASE_TASKS)
    assert base == pytest.approx({"recog_ms1mv3": 5, "age_morph2": 6, "biattr_celeba": 2, "affect_affectnet": 4,
                                  "affect_rafdb": 1, "parsing_celebam": 100, "align_300w": 1000})
    full = losses.official_loss_weights(list(OFFICIAL_TASKS))
    assert full == pytest.approx({
        "recog_ms1mv3": 5, "age_morph2": 4, "age_utkface": 1, "biattr_celeba": 2, "affect_affectnet": 20 / 3,
        "affect_rafdb": 5 / 3, "affect_ferplus": 5 / 3, "parsing_celebam": 100, "parsing_lapa": 100,
        "align_300w": 250, "align_cofw": 250, "align_wflw": 250, "align_aflw": 250})
    assert sum(full.values()) == pytest.approx(1222)
    naive = losses.official_loss_weights(FACEPTOR_BASE_TASKS, recipe="naive")
    assert naive["affect_affectnet"] == pytest.approx(0.8) and naive["align_300w"] == pytest.approx(1.0)
    mixed = losses.official_loss_weights(["age_morph2", make_task("pose_x", type="regression", num_queries=3)],
                                         fallback_weight=2.5)
    assert mixed == {"age_morph2": 6.0, "pose_x": 2.5}
    with pytest.raises(ValueError, match="unknown loss recipe"):
        losses.official_loss_weights(["age_morph2"], recipe="huge")

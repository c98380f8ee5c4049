import pytest

from proxyless.space import OpSpec, SearchSpace, get_space, make_divisible


def test_imagenet_space_matches_proxylessnas():
    space = get_space("imagenet")
    layers = space.layers()
    assert len(layers) == 21
    assert [layer.out_channels for layer in layers] == (
        [24] * 4 + [40] * 4 + [80] * 4 + [96] * 4 + [192] * 4 + [320]
    )
    firsts = [0, 4, 8, 12, 16, 20]
    assert [layers[i].stride for i in firsts] == [2, 2, 2, 1, 2, 1]
    for layer in layers:
        has_zero = OpSpec("zero") in layer.candidates
        assert has_zero == (layer.stride == 1 and layer.in_channels == layer.out_channels)
        assert len(layer.candidates) == (7 if has_zero else 6)
    assert space.stem_channels == 32 and space.first_channels == 16
    assert space.final_size == 7 and space.head_channels == 1280


def test_cifar_space_keeps_blocks_and_ends_at_4x4():
    space = get_space("cifar")
    assert len(space.layers()) == 21 and space.final_size == 4


def test_width_multiplier_rounds_to_multiples_of_8():
    space = get_space("imagenet", width_mult=0.75)
    widths = {layer.out_channels for layer in space.layers()}
    assert all(w % 8 == 0 for w in widths)
    assert space.channels(40) == make_divisible(30) == 32
    assert space.stem_channels == 24


@pytest.mark.parametrize("text", ["mb_k3_e3", "mb_k7_e6", "zero"])
def test_op_string_round_trip(text):
    assert str(OpSpec.parse(text)) == text


def test_bad_op_string_is_rejected():
    with pytest.raises(ValueError, match="expected 'mb_k<kernel>_e<expand>' or 'zero'"):
        OpSpec.parse("mbconv3x3")


def test_space_round_trips_through_a_dict():
    space = get_space("tiny", kernel_sizes=(3, 5), allow_zero=False)
    again = SearchSpace.from_dict(space.to_dict())
    assert again == space
    assert all(OpSpec("zero") not in layer.candidates for layer in again.layers())
    assert len(again.layers()[0].candidates) == 4


def test_unknown_space_and_bad_fields_are_clear_errors():
    with pytest.raises(ValueError, match="presets: imagenet, cifar, tiny"):
        get_space("resnet")
    with pytest.raises(ValueError, match="odd positive"):
        get_space("tiny", kernel_sizes=(4,))
    with pytest.raises(ValueError, match="malformed search space"):
        SearchSpace.from_dict({"name": "x"})

import pytest
import torch

from mnist_mlops.serve.model.network import DEFAULT_BLOCKS, DigitNet, build_network, count_parameters


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_network_maps_a_batch_of_28x28_images_to_ten_logits(batch):
    net = DigitNet().eval()
    with torch.inference_mode():
        out = net(torch.randn(batch, 1, 28, 28))
    assert out.shape == (batch, 10)
    assert torch.isfinite(out).all()


def test_network_accepts_channels_last_input_with_the_same_answer():
    net = DigitNet().eval()
    x = torch.randn(4, 1, 28, 28)
    with torch.inference_mode():
        expected = net(x)
        got = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_architecture_round_trips_through_build_network():
    net = DigitNet(((1, 8, 1), (8, 16, 2)))
    rebuilt = build_network(net.architecture())
    assert rebuilt.blocks == net.blocks
    rebuilt.load_state_dict(net.state_dict())  # same parameter names and shapes


def test_default_network_is_compact():
    assert build_network(None).blocks == DEFAULT_BLOCKS
    assert 100_000 < count_parameters(DigitNet()) < 250_000


def test_the_fused_inference_form_gives_the_same_logits():
    from mnist_mlops.serve.model.network import fused_for_inference

    net = DigitNet()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    net.eval()
    x = torch.randn(8, 1, 28, 28)
    with torch.inference_mode():
        torch.testing.assert_close(fused_for_inference(net)(x), net(x), rtol=1e-4, atol=1e-4)


def test_the_fused_inference_form_keeps_its_convolutions_in_channels_last_layout():
    """The layout that selects the faster NHWC kernels; the answer is the same for either input layout."""
    from mnist_mlops.serve.model.network import fused_for_inference

    fused = fused_for_inference(DigitNet().eval())
    convolutions = [m for m in fused.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convolutions and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convolutions)
    x = torch.randn(4, 1, 28, 28)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), fused(x.contiguous(memory_format=torch.channels_last)))


@pytest.mark.parametrize(
    ("choice", "expected"),
    [(None, torch.float32), ("", torch.float32), ("float32", torch.float32), (" BFloat16 ", torch.bfloat16)],
)
def test_the_served_number_type_is_float32_unless_chosen(choice, expected):
    from mnist_mlops.serve.model.network import inference_dtype

    assert inference_dtype(choice, torch.device("cpu")) is expected


def test_auto_picks_bfloat16_only_where_the_cpu_computes_in_it():
    from mnist_mlops.serve.model.network import inference_dtype

    native = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert inference_dtype("auto", torch.device("cpu")) is (torch.bfloat16 if native else torch.float32)


@pytest.mark.parametrize("choice", ["fp16", "float16", "int8", "bf16 please"])
def test_an_unknown_number_type_is_refused_naming_the_accepted_ones(choice):
    from mnist_mlops.serve.model.network import inference_dtype

    with pytest.raises(ValueError, match=r"MNIST_TORCH_DTYPE is .*; expected one of float32, bfloat16, auto"):
        inference_dtype(choice, torch.device("cpu"))

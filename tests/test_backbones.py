import pytest
import torch

from sklearn_npll._nn.backbones import MLP, PreActResNet18, SmallCNN, default_encoder


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def resnets():
    # building an 11M-parameter network takes a moment: build each variant once
    torch.manual_seed(0)
    return {
        (3, False): PreActResNet18(3),
        (1, False): PreActResNet18(1),
        (3, True): PreActResNet18(3, downsample_first=True),
    }


@pytest.mark.parametrize(
    "in_channels, size, downsample_first",
    [(3, 32, False), (1, 32, False), (3, 64, True), (3, 40, False)],
)
def test_preact_resnet18_shapes(resnets, in_channels, size, downsample_first):
    net = resnets[in_channels, downsample_first]
    out = net(torch.randn(2, in_channels, size, size))
    assert net.out_features == 512
    assert out.shape == (2, 512)
    assert torch.isfinite(out).all()


def test_preact_resnet18_parameter_count(resnets):
    # the reference reports 11.2M parameters per network (with its linear head)
    rgb, grey = resnets[3, False], resnets[1, False]
    assert 11.0e6 < n_params(rgb) < 11.3e6
    assert grey.conv1.in_channels == 1
    assert n_params(grey) == n_params(rgb) - 2 * 64 * 9
    # the strided first block gets a 1x1 shortcut convolution
    assert n_params(resnets[3, True]) == n_params(rgb) + 64 * 64


def test_preact_resnet18_downsample_first(resnets):
    net = resnets[3, True]
    assert net.layer1[0].conv1.stride == (2, 2)
    assert resnets[3, False].layer1[0].conv1.stride == (1, 1)
    # a 64 px image with downsample_first ends with the same 4x4 maps as 32 px without
    with torch.no_grad():
        maps = net.layer4(net.layer3(net.layer2(net.layer1(net.conv1(torch.zeros(1, 3, 64, 64))))))
    assert maps.shape[-2:] == (4, 4)


def test_preact_resnet18_wrong_channels(resnets):
    with pytest.raises(ValueError, match="in_channels=1"):
        resnets[3, False](torch.zeros(2, 1, 32, 32))


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("size", [4, 8, 28, 32])
def test_small_cnn_shapes(in_channels, size):
    net = SmallCNN(in_channels=in_channels)
    out = net(torch.randn(3, in_channels, size, size))
    assert net.out_features == 128
    assert out.shape == (3, 128)


def test_small_cnn_width_and_gradients():
    net = SmallCNN(in_channels=1, width=8)
    assert net.out_features == 32
    out = net(torch.randn(4, 1, 28, 28))
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    assert n_params(SmallCNN()) < 1e6


def test_mlp():
    net = MLP(10, hidden_sizes=(32, 16))
    assert net.out_features == 16
    assert net(torch.randn(5, 10)).shape == (5, 16)
    assert MLP(10).out_features == 256
    identity = MLP(7, hidden_sizes=())
    assert identity.out_features == 7
    x = torch.randn(3, 7)
    assert torch.equal(identity(x), x)


def test_wrong_input_messages():
    with pytest.raises(ValueError, match="in_channels=1"):
        SmallCNN(in_channels=3)(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(batch, channels, height, width\)"):
        SmallCNN()(torch.zeros(2, 28, 28))
    with pytest.raises(ValueError, match=r"\(batch, 10\)"):
        MLP(10)(torch.zeros(2, 11))
    with pytest.raises(ValueError, match="in_channels"):
        SmallCNN(in_channels=0)
    with pytest.raises(ValueError, match="hidden_sizes"):
        MLP(3, hidden_sizes=(4, -1))


@pytest.mark.parametrize(
    "shape, cls, kwargs",
    [
        ((5,), MLP, {"in_features": 5}),
        ((1, 8, 8), SmallCNN, {"in_channels": 1}),
        ((1, 28, 28), SmallCNN, {"in_channels": 1}),
        ((3, 31, 100), SmallCNN, {"in_channels": 3}),
        ((3, 32, 32), PreActResNet18, {"in_channels": 3, "downsample_first": False}),
        ((1, 32, 48), PreActResNet18, {"in_channels": 1, "downsample_first": False}),
        ((3, 64, 64), PreActResNet18, {"in_channels": 3, "downsample_first": True}),
    ],
)
def test_default_encoder(shape, cls, kwargs):
    got_cls, got_kwargs = default_encoder(shape)
    assert got_cls is cls
    assert got_kwargs == kwargs
    if cls is not PreActResNet18:  # the ResNet is exercised above
        net = got_cls(**got_kwargs)
        assert net(torch.randn(2, *shape)).shape == (2, net.out_features)


@pytest.mark.parametrize("shape", [(), (3, 32), (1, 3, 32, 32), (3, 0, 32)])
def test_default_encoder_bad_shape(shape):
    with pytest.raises(ValueError, match="sample_shape"):
        default_encoder(shape)

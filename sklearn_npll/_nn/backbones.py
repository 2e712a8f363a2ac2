"""Encoders (backbones) that turn one input batch into one feature vector per sample.

Every encoder here is a :class:`torch.nn.Module` with an integer attribute
``out_features`` and a ``forward(x)`` that returns a ``(batch, out_features)``
tensor. The classifier puts its heads (linear classifier, projection head) on top.

- :class:`PreActResNet18` is the backbone of the Co-Reg reference (PreAct ResNet-18
  trained from scratch, 11.2M parameters) for images of 32 pixels or more.
- :class:`SmallCNN` is a small, fast network for images smaller than 32 pixels
  (8x8 digits, 28x28 MNIST-like images).
- :class:`MLP` is for feature vectors, for example precomputed embeddings.
- :func:`default_encoder` picks one of them from the shape of one sample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PreActBlock", "PreActResNet18", "SmallCNN", "MLP", "default_encoder"]


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _check_image_batch(x, in_channels, name):
    if x.ndim != 4:
        raise ValueError(
            f"{name} expects a batch of images of shape (batch, channels, height, width), "
            f"got a tensor of shape {tuple(x.shape)}."
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{name} was built for {in_channels} input channel(s) but the batch has "
            f"shape {tuple(x.shape)} ({x.shape[1]} channels); build it with "
            f"in_channels={x.shape[1]}."
        )


class PreActBlock(nn.Module):
    """Pre-activation residual block with two 3x3 convolutions.

    ``BN - ReLU - conv3x3(stride) - BN - ReLU - conv3x3`` plus a shortcut: the
    identity, or a 1x1 convolution of the pre-activated input when the stride or the
    number of channels changes (He et al., "Identity Mappings in Deep Residual
    Networks", 2016).

    Parameters
    ----------
    in_planes : int
        Number of input channels.
    planes : int
        Number of output channels.
    stride : int, default=1
        Stride of the first convolution and of the shortcut.

    Examples
    --------
    >>> import torch
    >>> block = PreActBlock(64, 128, stride=2)
    >>> block(torch.zeros(2, 64, 8, 8)).shape
    torch.Size([2, 128, 4, 4])
    """

    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
        else:
            self.shortcut = None

    def forward(self, x):
        """Apply the block.

        Parameters
        ----------
        x : torch.Tensor of shape (batch, in_planes, height, width)
            Input feature maps.

        Returns
        -------
        torch.Tensor of shape (batch, planes, height / stride, width / stride)
            Output feature maps.
        """
        out = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """PreAct ResNet-18 encoder, the backbone of the Co-Reg reference.

    A 3x3 stem convolution (stride 1, 64 channels), four stages of two
    :class:`PreActBlock` each with 64, 128, 256 and 512 channels (strides 1, 2, 2,
    2), a final batch norm and ReLU, then global average pooling to a 512-dimensional
    feature vector. About 11.2M parameters for RGB input.

    Parameters
    ----------
    in_channels : int, default=3
        Number of input channels: 3 for RGB, 1 for grey-scale images (1-channel
        stem).
    downsample_first : bool, default=False
        Use stride 2 in the first stage, as the reference does for 64-pixel inputs
        (Tiny-ImageNet size), so that the later stages see the same spatial sizes as
        for 32-pixel inputs.

    Attributes
    ----------
    out_features : int
        Size of the feature vector, 512.

    Notes
    -----
    The pooling is adaptive, so any input of at least 32 pixels per side works (the
    spatial size after the last stage is the input size divided by 8, or by 16 with
    ``downsample_first``). Smaller images also run, but :class:`SmallCNN` suits them
    better.

    Examples
    --------
    >>> import torch
    >>> net = PreActResNet18(in_channels=1)
    >>> net(torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 512])
    """

    def __init__(self, in_channels=3, downsample_first=False):
        super().__init__()
        _check_positive_int(in_channels, "in_channels")
        self.in_channels = in_channels
        self.downsample_first = bool(downsample_first)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self._in_planes = 64
        self.layer1 = self._make_layer(64, 2, stride=2 if downsample_first else 1)
        self.layer2 = self._make_layer(128, 2, stride=2)
        self.layer3 = self._make_layer(256, 2, stride=2)
        self.layer4 = self._make_layer(512, 2, stride=2)
        self.bn = nn.BatchNorm2d(512)
        self.out_features = 512

    def _make_layer(self, planes, num_blocks, stride):
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(PreActBlock(self._in_planes, planes, s))
            self._in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        """Encode a batch of images.

        Parameters
        ----------
        x : torch.Tensor of shape (batch, in_channels, height, width)
            Normalised images.

        Returns
        -------
        torch.Tensor of shape (batch, 512)
            One feature vector per image.
        """
        _check_image_batch(x, self.in_channels, type(self).__name__)
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.relu(self.bn(out))
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


def _conv_bn_relu(in_channels, out_channels):
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(nn.Module):
    """Small convolutional encoder for images smaller than 32 pixels.

    Three stages of two ``conv3x3 - BN - ReLU`` layers with ``width``,
    ``2 * width`` and ``4 * width`` channels. A 2x2 max-pool follows each of the
    first two stages when the feature maps are at least 8 pixels on their shorter
    side (so 8x8 inputs are pooled once, 28x28 inputs twice, and tiny inputs never
    shrink below 4 pixels), then global average pooling. About 0.29M parameters for
    ``width=32``.

    Parameters
    ----------
    in_channels : int, default=1
        Number of input channels.
    width : int, default=32
        Number of channels of the first stage.

    Attributes
    ----------
    out_features : int
        Size of the feature vector, ``4 * width``.

    Examples
    --------
    >>> import torch
    >>> net = SmallCNN(in_channels=1)
    >>> net(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 128])
    """

    def __init__(self, in_channels=1, width=32):
        super().__init__()
        _check_positive_int(in_channels, "in_channels")
        _check_positive_int(width, "width")
        self.in_channels = in_channels
        self.width = width
        self.stage1 = nn.Sequential(*_conv_bn_relu(in_channels, width), *_conv_bn_relu(width, width))
        self.stage2 = nn.Sequential(
            *_conv_bn_relu(width, 2 * width), *_conv_bn_relu(2 * width, 2 * width)
        )
        self.stage3 = nn.Sequential(
            *_conv_bn_relu(2 * width, 4 * width), *_conv_bn_relu(4 * width, 4 * width)
        )
        self.out_features = 4 * width

    @staticmethod
    def _maybe_pool(x):
        if min(x.shape[-2:]) >= 8:
            return F.max_pool2d(x, 2)
        return x

    def forward(self, x):
        """Encode a batch of images.

        Parameters
        ----------
        x : torch.Tensor of shape (batch, in_channels, height, width)
            Normalised images.

        Returns
        -------
        torch.Tensor of shape (batch, 4 * width)
            One feature vector per image.
        """
        _check_image_batch(x, self.in_channels, type(self).__name__)
        out = self._maybe_pool(self.stage1(x))
        out = self._maybe_pool(self.stage2(out))
        out = self.stage3(out)
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


class MLP(nn.Module):
    """Multi-layer perceptron encoder for feature vectors.

    One ``Linear - BatchNorm1d - ReLU`` layer per entry of ``hidden_sizes``.

    Parameters
    ----------
    in_features : int
        Size of the input vectors.
    hidden_sizes : sequence of int, default=(256, 256)
        Width of each layer. An empty sequence gives the identity encoder (useful
        for a linear probe on embeddings).

    Attributes
    ----------
    out_features : int
        ``hidden_sizes[-1]``, or ``in_features`` when ``hidden_sizes`` is empty.

    Notes
    -----
    Batch norm needs more than one sample per batch in training mode.

    Examples
    --------
    >>> import torch
    >>> net = MLP(16, hidden_sizes=(32,))
    >>> net(torch.zeros(4, 16)).shape
    torch.Size([4, 32])
    """

    def __init__(self, in_features, hidden_sizes=(256, 256)):
        super().__init__()
        _check_positive_int(in_features, "in_features")
        hidden_sizes = tuple(hidden_sizes)
        for h in hidden_sizes:
            _check_positive_int(h, "every entry of hidden_sizes")
        self.in_features = in_features
        self.hidden_sizes = hidden_sizes
        layers = []
        prev = in_features
        for h in hidden_sizes:
            layers += [nn.Linear(prev, h), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
            prev = h
        self.layers = nn.Sequential(*layers)
        self.out_features = prev

    def forward(self, x):
        """Encode a batch of feature vectors.

        Parameters
        ----------
        x : torch.Tensor of shape (batch, in_features)
            Normalised feature vectors.

        Returns
        -------
        torch.Tensor of shape (batch, out_features)
            One feature vector per sample.
        """
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"MLP expects a batch of shape (batch, {self.in_features}), got a tensor "
                f"of shape {tuple(x.shape)}."
            )
        return self.layers(x)


def default_encoder(sample_shape):
    """Choose the library's encoder for samples of a given shape.

    Parameters
    ----------
    sample_shape : tuple of int
        Shape of one sample: ``(d,)`` for feature vectors, ``(C, H, W)`` for images.

    Returns
    -------
    cls : type
        :class:`MLP` for feature vectors; :class:`PreActResNet18` for images whose
        shorter side is at least 32 pixels (with ``downsample_first=True`` from 64
        pixels); :class:`SmallCNN` for smaller images.
    kwargs : dict
        Keyword arguments to build it: ``cls(**kwargs)``.

    Raises
    ------
    ValueError
        If ``sample_shape`` has neither 1 nor 3 entries, or holds a non-positive
        size.

    Examples
    --------
    >>> cls, kwargs = default_encoder((3, 64, 64))
    >>> cls.__name__, kwargs
    ('PreActResNet18', {'in_channels': 3, 'downsample_first': True})
    >>> default_encoder((1, 28, 28))[0].__name__
    'SmallCNN'
    """
    shape = tuple(int(s) for s in sample_shape)
    if len(shape) not in (1, 3) or any(s < 1 for s in shape):
        raise ValueError(
            "sample_shape must be (d,) for feature vectors or (channels, height, width) "
            f"for images, with positive sizes; got {tuple(sample_shape)}."
        )
    if len(shape) == 1:
        return MLP, {"in_features": shape[0]}
    channels, height, width = shape
    side = min(height, width)
    if side >= 32:
        return PreActResNet18, {"in_channels": channels, "downsample_first": side >= 64}
    return SmallCNN, {"in_channels": channels}

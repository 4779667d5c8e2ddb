"""The benchmark's models in Keras 3 and PyTorch, layer for layer as jaxcnn's (same
layers, shapes and parameter counts; tools/bench_peers.py asserts the counts).

Each builder takes (input_shape HxWxC, num_classes). Keras models are built from
`keras.applications` where Keras has the model, by hand otherwise; PyTorch models are
built by hand (torchvision is not a dependency), in Keras' layouts where counts differ
(ResNet50 with biased convolutions, as keras.applications and jaxcnn's default).
"""

from __future__ import annotations

# --- Keras ---------------------------------------------------------------------


def keras_model(name: str, shape, classes: int):
    import keras
    from keras import layers as kl

    inputs = keras.Input(shape)
    if name == "simple_cnn":  # the course's CNN
        x = kl.Conv2D(32, 3, activation="relu")(inputs)
        x = kl.MaxPooling2D(2)(x)
        x = kl.Dense(128, activation="relu")(kl.Flatten()(x))
        return keras.Model(inputs, kl.Dense(classes)(x))
    if name == "lenet5":
        x = inputs
        for filters in (6, 16):
            x = kl.AveragePooling2D(2)(kl.Conv2D(filters, 5, activation="tanh")(x))
        x = kl.Flatten()(kl.Conv2D(120, 5, activation="tanh")(x))
        return keras.Model(inputs, kl.Dense(classes)(kl.Dense(84, activation="tanh")(x)))
    if name == "resnet20":
        return keras.Model(inputs, _keras_cifar_resnet(inputs, 3, classes))
    if name == "vgg16":
        return keras.applications.VGG16(weights=None, input_shape=shape, classes=classes,
                                        classifier_activation=None)
    if name == "mobilenet_v2":
        return keras.applications.MobileNetV2(weights=None, input_shape=shape, classes=classes,
                                              classifier_activation=None)
    if name == "resnet50":
        return keras.applications.ResNet50(weights=None, input_shape=shape, classes=classes,
                                           classifier_activation=None)
    raise ValueError(f"no Keras model for {name!r}")


def _keras_cifar_resnet(inputs, blocks: int, classes: int):
    """He et al.'s CIFAR ResNet with option A shortcuts (zero-padded identity)."""
    import keras
    from keras import layers as kl

    def conv_bn(x, filters, strides):
        x = kl.Conv2D(filters, 3, strides, padding="same", use_bias=False)(x)
        return kl.BatchNormalization(epsilon=1e-5, momentum=0.9)(x)

    x = kl.ReLU()(conv_bn(inputs, 16, 1))
    for stage, filters in enumerate((16, 32, 64)):
        for i in range(blocks):
            strides = 2 if stage and not i else 1
            y = conv_bn(kl.ReLU()(conv_bn(x, filters, strides)), filters, 1)
            shortcut = x
            if strides != 1 or x.shape[-1] != filters:
                extra = filters - x.shape[-1]
                shortcut = kl.Lambda(lambda t, s=strides, e=extra: keras.ops.pad(
                    t[:, ::s, ::s, :], [(0, 0), (0, 0), (0, 0), (e // 2, e - e // 2)]))(x)
            x = kl.ReLU()(kl.Add()([y, shortcut]))
    return kl.Dense(classes)(kl.GlobalAveragePooling2D()(x))


# --- PyTorch -------------------------------------------------------------------


def torch_model(name: str, shape, classes: int):
    import torch
    from torch import nn

    channels = shape[-1]
    if name == "simple_cnn":
        side = (shape[0] - 2) // 2
        return nn.Sequential(nn.Conv2d(channels, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(32 * side * side, 128), nn.ReLU(), nn.Linear(128, classes))
    if name == "lenet5":
        return nn.Sequential(nn.Conv2d(channels, 6, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 5), nn.Tanh(),
                             nn.AvgPool2d(2), nn.Conv2d(16, 120, 5), nn.Tanh(), nn.Flatten(),
                             nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, classes))
    if name == "resnet20":
        return _TorchCifarResNet(3, classes)
    if name == "vgg16":
        stages, layers, cin = (64, 128, 256, 512, 512), [], channels
        for stage, filters in enumerate(stages):
            for _ in range(2 if stage < 2 else 3):
                layers += [nn.Conv2d(cin, filters, 3, padding=1), nn.ReLU()]
                cin = filters
            layers.append(nn.MaxPool2d(2))
        side = shape[0] // 32
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512 * side * side, 4096), nn.ReLU(),
                             nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, classes))
    if name == "mobilenet_v2":
        return _torch_mobilenet_v2(channels, classes)
    if name == "resnet50":
        return _TorchResNet50(channels, classes)
    raise ValueError(f"no PyTorch model for {name!r} ({torch.__version__})")


def _torch_cifar_block(cin, filters, strides):
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, filters, 3, strides, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(filters, eps=1e-5)
            self.conv2 = nn.Conv2d(filters, filters, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(filters, eps=1e-5)

        def forward(self, x):
            y = self.bn2(self.conv2(self.bn1(self.conv1(x)).relu()))
            shortcut = x
            if strides != 1 or cin != filters:
                extra = filters - cin
                shortcut = nn.functional.pad(x[:, :, ::strides, ::strides], (0, 0, 0, 0, extra // 2, extra - extra // 2))
            return (y + shortcut).relu()
    return Block()


class _TorchCifarResNet:
    def __new__(cls, blocks: int, classes: int):
        from torch import nn
        layers, cin = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()], 16
        for stage, filters in enumerate((16, 32, 64)):
            for i in range(blocks):
                layers.append(_torch_cifar_block(cin, filters, 2 if stage and not i else 1))
                cin = filters
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes))


def _torch_mobilenet_v2(channels: int, classes: int):
    """Sandler et al. 2018 as keras.applications.MobileNetV2 (alpha 1, 224x224)."""
    from torch import nn

    def conv_bn(cin, cout, kernel=1, stride=1, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout, eps=1e-3)]
        return layers + [nn.ReLU6()] if act else layers

    class Inverted(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = cin * expand
            layers = conv_bn(cin, hidden) if expand != 1 else []
            layers += conv_bn(hidden, hidden, 3, stride, hidden) + conv_bn(hidden, cout, act=False)
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    layers, cin = conv_bn(channels, 32, 3, 2), 32
    for expand, cout, repeats, stride in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                                          (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(repeats):
            layers.append(Inverted(cin, cout, stride if i == 0 else 1, expand))
            cin = cout
    layers += conv_bn(cin, 1280)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, classes))


class _TorchResNet50:
    """keras.applications.ResNet50's layout: biased convolutions, the stride in each
    stage's first 1x1 convolution."""
    def __new__(cls, channels: int, classes: int):
        from torch import nn

        class Bottleneck(nn.Module):
            def __init__(self, cin, filters, stride):
                super().__init__()
                out = 4 * filters
                self.body = nn.Sequential(
                    nn.Conv2d(cin, filters, 1, stride), nn.BatchNorm2d(filters, eps=1.001e-5), nn.ReLU(),
                    nn.Conv2d(filters, filters, 3, 1, 1), nn.BatchNorm2d(filters, eps=1.001e-5), nn.ReLU(),
                    nn.Conv2d(filters, out, 1), nn.BatchNorm2d(out, eps=1.001e-5))
                self.project = (nn.Sequential(nn.Conv2d(cin, out, 1, stride), nn.BatchNorm2d(out, eps=1.001e-5))
                                if stride != 1 or cin != out else None)

            def forward(self, x):
                shortcut = x if self.project is None else self.project(x)
                return (self.body(x) + shortcut).relu()

        layers = [nn.Conv2d(channels, 64, 7, 2, 3), nn.BatchNorm2d(64, eps=1.001e-5), nn.ReLU(),
                  nn.MaxPool2d(3, 2, 1)]
        cin = 64
        for stage, (filters, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
            for i in range(blocks):
                layers.append(Bottleneck(cin, filters, 2 if stage and not i else 1))
                cin = 4 * filters
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))

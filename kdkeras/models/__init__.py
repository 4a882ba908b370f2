"""The paper's model zoo: WRN, ResNet-18 and MobileNetV2 with grouped convolutions."""

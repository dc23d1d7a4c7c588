"""pwgroup: several Bluetooth speakers played as one group sink, in sync, on PipeWire."""

__version__ = "0.1.0"

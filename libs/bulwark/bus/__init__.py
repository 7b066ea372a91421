"""The Kafka bus: producer, consumer loop, dead letters, topic admin, whole-topic reader."""

from bulwark.bus.loop import BusSettings, ConsumerLoop, Context, FaultSettings, Handler
from bulwark.bus.producer import EventProducer, Output, make_producer

__all__ = ["BusSettings", "ConsumerLoop", "Context", "EventProducer", "FaultSettings", "Handler", "Output",
           "make_producer"]

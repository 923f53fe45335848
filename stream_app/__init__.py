"""churn-stream: real-time customer health scoring on Kafka, Faust and Redis."""

__version__ = "0.1.0"

"""The Kafka side of Backout: topics, the Faust worker, bridges, replay and backtest."""

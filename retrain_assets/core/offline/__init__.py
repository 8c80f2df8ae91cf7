"""Offline tools: replayable timelines of deliveries (scenarios) and the backtest of retraining policies over a history."""

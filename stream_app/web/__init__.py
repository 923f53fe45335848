"""The live dashboard: its HTTP API and static page, and the live Kafka feeds it shows.
"""

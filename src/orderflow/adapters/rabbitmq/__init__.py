"""RabbitMQ: topology, connections and message (de)construction for the event backbone."""

# A stand-in for the official rabbitmq management image, from Debian's RabbitMQ 3.10
# (quorum queues, management and prometheus plugins): same RABBITMQ_DEFAULT_USER/PASS.
ARG BASE_IMAGE=orderflow-base:bookworm
FROM ${BASE_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends rabbitmq-server \
    && rm -rf /var/lib/apt/lists/* /var/lib/rabbitmq/mnesia \
    && install -d -o rabbitmq -g rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
COPY rabbitmq-entrypoint.sh /usr/local/bin/standin-entrypoint
ENV RABBITMQ_LOGS=- \
    RABBITMQ_CONFIG_FILE=/var/lib/rabbitmq/standin.conf
USER rabbitmq
EXPOSE 5672 15672 15692
ENTRYPOINT ["standin-entrypoint"]

/* A document system's AMQP client in C (librabbitmq, the library under Debian's amqp-tools), written
 * from docs/wire.md alone: TLS verified against the broker's CA, login with the agency's client
 * certificate (SASL EXTERNAL), then
 *   publish: the bytes of stdin to exchange in.<code> (persistent, application/xml), confirmed;
 *   consume: one message from queue inbox.<code> to stdout, acked after it is written.
 * amqp-tools' own commands log in with a password only, which lienthong's accounts do not have.
 *
 *   amqp_client publish|consume HOST PORT VHOST CA CERT KEY EXCHANGE|QUEUE USER
 *
 * USER goes in the EXTERNAL response (librabbitmq cannot send an empty one); the broker takes the
 * user from the certificate.
 */
#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check(amqp_rpc_reply_t r, const char *what) {
  if (r.reply_type == AMQP_RESPONSE_NORMAL) return;
  if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION)
    fprintf(stderr, "amqp_client: %s failed: %s\n", what, amqp_error_string2(r.library_error));
  else
    fprintf(stderr, "amqp_client: %s refused by the broker (method %08x)\n", what, r.reply.id);
  exit(1);
}

static void die(int status, const char *what) {
  if (status >= 0) return;
  fprintf(stderr, "amqp_client: %s: %s\n", what, amqp_error_string2(status));
  exit(1);
}

static amqp_bytes_t read_all(FILE *f) {
  size_t cap = 1 << 16, len = 0, n;
  char *buf = malloc(cap);
  while ((n = fread(buf + len, 1, cap - len, f)) > 0) {
    len += n;
    if (len == cap) buf = realloc(buf, cap *= 2);
  }
  amqp_bytes_t out = {len, buf};
  return out;
}

int main(int argc, char **argv) {
  if (argc != 10) {
    fprintf(stderr, "usage: amqp_client publish|consume HOST PORT VHOST CA CERT KEY EXCHANGE|QUEUE USER\n");
    return 2;
  }
  const char *mode = argv[1], *target = argv[8];
  amqp_connection_state_t conn = amqp_new_connection();
  amqp_socket_t *sock = amqp_ssl_socket_new(conn);
  die(amqp_ssl_socket_set_cacert(sock, argv[5]), "CA certificate");
  die(amqp_ssl_socket_set_key(sock, argv[6], argv[7]), "client certificate");
  amqp_ssl_socket_set_verify_peer(sock, 1);
  amqp_ssl_socket_set_verify_hostname(sock, 1);
  die(amqp_socket_open(sock, argv[2], atoi(argv[3])), "TLS connection");
  check(amqp_login(conn, argv[4], 0, 131072, 0, AMQP_SASL_METHOD_EXTERNAL, argv[9]), "EXTERNAL login");
  amqp_channel_open(conn, 1);
  check(amqp_get_rpc_reply(conn), "channel.open");

  if (strcmp(mode, "publish") == 0) {
    amqp_confirm_select(conn, 1);
    check(amqp_get_rpc_reply(conn), "confirm.select");
    amqp_basic_properties_t props;
    memset(&props, 0, sizeof props);
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    props.content_type = amqp_cstring_bytes("application/xml");
    props.delivery_mode = 2;
    amqp_bytes_t body = read_all(stdin);
    die(amqp_basic_publish(conn, 1, amqp_cstring_bytes(target), amqp_empty_bytes, 0, 0, &props, body),
        "publish");
    amqp_frame_t frame;  /* wait for the broker's confirm */
    die(amqp_simple_wait_frame(conn, &frame), "confirm");
    if (frame.frame_type != AMQP_FRAME_METHOD || frame.payload.method.id != AMQP_BASIC_ACK_METHOD) {
      fprintf(stderr, "amqp_client: the broker did not confirm the message\n");
      return 1;
    }
  } else {
    amqp_basic_qos(conn, 1, 0, 1, 0);
    amqp_basic_consume(conn, 1, amqp_cstring_bytes(target), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
    check(amqp_get_rpc_reply(conn), "basic.consume");
    amqp_envelope_t env;
    amqp_maybe_release_buffers(conn);
    check(amqp_consume_message(conn, &env, NULL, 0), "consume");
    fwrite(env.message.body.bytes, 1, env.message.body.len, stdout);
    fflush(stdout);
    amqp_basic_ack(conn, 1, env.delivery_tag, 0);
    amqp_destroy_envelope(&env);
  }
  amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
  amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(conn);
  return 0;
}

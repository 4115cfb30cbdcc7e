/* RFC 2449's EXPIRE capability. The pop3 process has no hook for CAPA:
   its reply is a constant that client_send_line() writes in one piece,
   so this filter recognizes exactly that piece and adds a line before
   the final ".". Message text can't be mistaken for it: RETR and TOP
   write it dot-stuffed, in pieces that never hold "\r\n.\r\n". */

#include "lib.h"
#include "ostream-private.h"
#include "pop3-capability.h"
#include "leave-on-server-capa.h"

#define LEAVE_ON_SERVER_CAPA_REPLY "+OK\r\n"POP3_CAPABILITY_REPLY".\r\n"

struct leave_on_server_capa_ostream {
	struct ostream_private ostream;
	/* the whole reply, allocated with the stream (freed with it) */
	char reply[];
};

static ssize_t
leave_on_server_capa_sendv(struct ostream_private *stream,
			   const struct const_iovec *iov,
			   unsigned int iov_count)
{
	struct leave_on_server_capa_ostream *cstream =
		container_of(stream, struct leave_on_server_capa_ostream,
			     ostream);
	const size_t capa_len = sizeof(LEAVE_ON_SERVER_CAPA_REPLY) - 1;
	ssize_t ret;

	if (iov_count == 1 && iov[0].iov_len == capa_len &&
	    memcmp(iov[0].iov_base, LEAVE_ON_SERVER_CAPA_REPLY,
		   capa_len) == 0) {
		size_t len = strlen(cstream->reply);

		if ((ret = o_stream_send(stream->parent, cstream->reply,
					 len)) < 0) {
			o_stream_copy_error_from_parent(stream);
			return -1;
		}
		/* the parent buffers without limit, as the pop3 process
		   set up its output */
		i_assert((size_t)ret == len);
		stream->ostream.offset += capa_len;
		return capa_len;
	}
	if ((ret = o_stream_sendv(stream->parent, iov, iov_count)) < 0) {
		o_stream_copy_error_from_parent(stream);
		return -1;
	}
	stream->ostream.offset += ret;
	return ret;
}

struct ostream *
leave_on_server_capa_ostream_create(struct ostream *output,
				    const char *extra_line)
{
	struct leave_on_server_capa_ostream *cstream;
	const char *reply = t_strconcat("+OK\r\n"POP3_CAPABILITY_REPLY,
					extra_line, "\r\n.\r\n", NULL);
	size_t len = strlen(reply) + 1;

	cstream = i_malloc(MALLOC_ADD(sizeof(*cstream), len));
	memcpy(cstream->reply, reply, len);
	cstream->ostream.sendv = leave_on_server_capa_sendv;
	return o_stream_create(&cstream->ostream, output,
			       o_stream_get_fd(output));
}

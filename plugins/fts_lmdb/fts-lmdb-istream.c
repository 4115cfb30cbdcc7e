/* A seekable decoding stream over one part. Dovecot's BINARY fetch
   decodes the whole part into a temporary file for every new connection;
   this one decodes only from the checkpoint before the wanted offset,
   with the same decoder streams, so the bytes are the same. */

#include "lib.h"
#include "array.h"
#include "istream-private.h"
#include "istream-base64.h"
#include "istream-qp.h"
#include "fts-lmdb-partmap.h"
#include "fts-lmdb-istream.h"

#define FTS_LMDB_ISTREAM_MAX_BUFFER (64 * 1024)

struct fts_lmdb_istream {
	struct istream_private istream;

	struct istream *mail_input;
	uoff_t body_offset, body_size, decoded_size;
	enum fts_lmdb_partmap_cte cte;
	ARRAY_TYPE(fts_lmdb_checkpoint) checkpoints;

	/* decoding from a checkpoint; its offset 0 is decoder_start */
	struct istream *decoder;
	uoff_t decoder_start;
};

static void fts_lmdb_istream_destroy(struct iostream_private *stream)
{
	struct fts_lmdb_istream *lstream =
		container_of(stream, struct fts_lmdb_istream,
			     istream.iostream);

	i_stream_unref(&lstream->decoder);
	i_stream_unref(&lstream->mail_input);
	array_free(&lstream->checkpoints);
	i_stream_free_buffer(&lstream->istream);
}

static void fts_lmdb_istream_open_decoder(struct fts_lmdb_istream *lstream,
					  const struct fts_lmdb_checkpoint *cp)
{
	struct istream *range;

	i_stream_unref(&lstream->decoder);
	range = i_stream_create_range(lstream->mail_input,
				      lstream->body_offset + cp->encoded,
				      lstream->body_size - cp->encoded);
	if (lstream->cte == FTS_LMDB_PARTMAP_BASE64)
		lstream->decoder = i_stream_create_base64_decoder(range);
	else
		lstream->decoder = i_stream_create_qp_decoder(range);
	i_stream_unref(&range);
	lstream->decoder_start = cp->decoded;
}

/* Positions the decoder at the decoded offset, from the nearest
   checkpoint unless the current decoder is already on its way there. */
static void fts_lmdb_istream_position(struct fts_lmdb_istream *lstream,
				      uoff_t offset)
{
	const struct fts_lmdb_checkpoint *cp;
	uoff_t cur;

	cp = fts_lmdb_checkpoint_find(&lstream->checkpoints, offset);
	if (lstream->decoder != NULL) {
		cur = lstream->decoder_start + lstream->decoder->v_offset;
		if (cur == offset)
			return;
		if (cur > offset || cp->decoded > cur)
			fts_lmdb_istream_open_decoder(lstream, cp);
	} else {
		fts_lmdb_istream_open_decoder(lstream, cp);
	}
	cur = lstream->decoder_start + lstream->decoder->v_offset;
	i_stream_skip(lstream->decoder, offset - cur);
}

static ssize_t fts_lmdb_istream_read(struct istream_private *stream)
{
	struct fts_lmdb_istream *lstream =
		container_of(stream, struct fts_lmdb_istream, istream);
	const unsigned char *data;
	uoff_t offset = stream->istream.v_offset + (stream->pos - stream->skip);
	size_t size, avail;
	int ret;

	if (offset >= lstream->decoded_size) {
		stream->istream.eof = TRUE;
		return -1;
	}
	fts_lmdb_istream_position(lstream, offset);
	if (lstream->decoder_start + lstream->decoder->v_offset == offset)
		ret = i_stream_read_more(lstream->decoder, &data, &size);
	else
		ret = -1;
	if (ret == 0)
		return 0;
	if (ret < 0) {
		if (lstream->decoder->stream_errno != 0) {
			io_stream_set_error(&stream->iostream, "%s",
				i_stream_get_error(lstream->decoder));
			stream->istream.stream_errno =
				lstream->decoder->stream_errno;
		} else {
			/* the part map promised more: the mail changed */
			io_stream_set_error(&stream->iostream,
				"Decoded part ended before %"PRIuUOFF_T
				", the index says %"PRIuUOFF_T,
				offset + 1, lstream->decoded_size);
			stream->istream.stream_errno = EINVAL;
		}
		return -1;
	}
	if (size > lstream->decoded_size - offset)
		size = lstream->decoded_size - offset;
	if (!i_stream_try_alloc(stream, size, &avail))
		return -2;
	size = I_MIN(size, avail);
	memcpy(stream->w_buffer + stream->pos, data, size);
	stream->pos += size;
	i_stream_skip(lstream->decoder, size);
	return size;
}

static void fts_lmdb_istream_seek(struct istream_private *stream,
				  uoff_t v_offset, bool mark ATTR_UNUSED)
{
	/* the decoder is positioned by the next read */
	stream->istream.v_offset = v_offset;
	stream->skip = stream->pos = 0;
	stream->istream.eof = FALSE;
}

static int fts_lmdb_istream_stat(struct istream_private *stream,
				 bool exact ATTR_UNUSED)
{
	struct fts_lmdb_istream *lstream =
		container_of(stream, struct fts_lmdb_istream, istream);

	stream->statbuf.st_size = lstream->decoded_size;
	return 0;
}

struct istream *
fts_lmdb_istream_create(struct istream *mail_input,
			const struct fts_lmdb_part_map *part)
{
	struct fts_lmdb_istream *lstream;

	lstream = i_new(struct fts_lmdb_istream, 1);
	lstream->mail_input = mail_input;
	i_stream_ref(mail_input);
	lstream->body_offset = part->physical_pos + part->header_size;
	lstream->body_size = part->body_size;
	lstream->decoded_size = part->decoded_size;
	lstream->cte = part->cte;
	i_array_init(&lstream->checkpoints,
		     array_count(&part->checkpoints));
	array_append_array(&lstream->checkpoints, &part->checkpoints);

	lstream->istream.iostream.destroy = fts_lmdb_istream_destroy;
	lstream->istream.max_buffer_size = FTS_LMDB_ISTREAM_MAX_BUFFER;
	lstream->istream.read = fts_lmdb_istream_read;
	lstream->istream.seek = fts_lmdb_istream_seek;
	lstream->istream.stat = fts_lmdb_istream_stat;
	lstream->istream.istream.blocking = mail_input->blocking;
	lstream->istream.istream.seekable = TRUE;
	lstream->istream.istream.readable_fd = FALSE;
	return i_stream_create(&lstream->istream, NULL, -1, 0);
}

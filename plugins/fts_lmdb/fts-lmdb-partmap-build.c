/* Building a message's part map when it is indexed. The part tree is
   Dovecot's own (mail_get_parts), and each part's Content-Transfer-
   Encoding is read the way Dovecot's binary fetch reads it, so a map
   describes exactly what a BINARY fetch would decode. */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "istream.h"
#include "message-part.h"
#include "message-parser.h"
#include "message-header-parser.h"
#include "message-decoder.h"
#include "mail-storage.h"
#include "fts-lmdb-partmap.h"
#include "fts-lmdb-partmap-build.h"

/* The part's Content-Transfer-Encoding as index-mail-binary.c finds it:
   the last such header wins. */
static enum message_cte
fts_lmdb_part_cte(struct istream *input, const struct message_part *part)
{
	struct message_header_parser_ctx *parser;
	struct message_header_line *hdr;
	struct message_size hdr_size;
	enum message_cte cte = MESSAGE_CTE_78BIT;
	int ret;

	i_stream_seek(input, part->physical_pos);
	parser = message_parse_header_init(input, &hdr_size, 0);
	while ((ret = message_parse_header_next(parser, &hdr)) > 0) {
		if (strcasecmp(hdr->name, "Content-Transfer-Encoding") == 0)
			cte = message_decoder_parse_cte(hdr);
	}
	message_parse_header_deinit(&parser);
	return cte;
}

/* Feeds size bytes from offset to the scanner or the CRLF scan.
   -1 on a read error, else what the scanner said. */
static int fts_lmdb_partmap_read(struct istream *input, uoff_t offset,
				 uoff_t size, struct fts_lmdb_part_scan *scan,
				 struct fts_lmdb_crlf_scan *crlf)
{
	const unsigned char *data;
	size_t n;
	int ret = 0;

	i_stream_seek(input, offset);
	while (size > 0 && i_stream_read_more(input, &data, &n) > 0) {
		n = I_MIN(n, size);
		if (scan != NULL) {
			if (ret == 0 && fts_lmdb_part_scan_more(scan, data,
								n) < 0)
				ret = 1;
		} else {
			fts_lmdb_crlf_scan_more(crlf, data, n);
		}
		i_stream_skip(input, n);
		size -= n;
	}
	if (input->stream_errno != 0 || size > 0)
		return -1;
	return ret == 0 ? 0 : 1;
}

static int fts_lmdb_partmap_add(struct fts_lmdb_mail_map *map, pool_t pool,
				struct istream *input,
				const struct message_part *part)
{
	struct fts_lmdb_part_map pmap;
	struct fts_lmdb_part_scan *scan;
	uoff_t decoded_size;
	int ret;

	i_zero(&pmap);
	switch (fts_lmdb_part_cte(input, part)) {
	case MESSAGE_CTE_BASE64:
		pmap.cte = FTS_LMDB_PARTMAP_BASE64;
		break;
	case MESSAGE_CTE_QP:
		pmap.cte = FTS_LMDB_PARTMAP_QP;
		break;
	case MESSAGE_CTE_UNKNOWN:
		/* an error, which Dovecot's own path reports */
		map->converts_cleanly = FALSE;
		/* fall through */
	default:
		return input->stream_errno != 0 ? -1 : 0;
	}
	array_push_back(&map->converted_pos, &part->physical_pos);
	if (part->children != NULL || part->body_size.physical_size == 0)
		return 0;
	pmap.physical_pos = part->physical_pos;
	pmap.header_size = part->header_size.physical_size;
	pmap.body_size = part->body_size.physical_size;
	p_array_init(&pmap.checkpoints, pool, 8);
	scan = fts_lmdb_part_scan_init(pmap.cte, FTS_LMDB_PARTMAP_SPACING,
				       &pmap.checkpoints);
	ret = fts_lmdb_partmap_read(input, pmap.physical_pos +
				    pmap.header_size, pmap.body_size,
				    scan, NULL);
	if (fts_lmdb_part_scan_finish(&scan, &decoded_size) < 0 && ret == 0)
		ret = 1;
	if (ret != 0) {
		/* invalid encoding: no map, Dovecot's path gives its error */
		map->converts_cleanly = FALSE;
		return ret < 0 ? -1 : 0;
	}
	pmap.decoded_size = decoded_size;
	array_push_back(&map->parts, &pmap);
	return 0;
}

static int fts_lmdb_partmap_walk(struct fts_lmdb_mail_map *map, pool_t pool,
				 struct istream *input,
				 const struct message_part *part)
{
	/* every part's header, as Dovecot's whole-message conversion
	   reads them */
	for (; part != NULL; part = part->next) {
		if (fts_lmdb_partmap_add(map, pool, input, part) < 0)
			return -1;
		if (part->children != NULL &&
		    fts_lmdb_partmap_walk(map, pool, input,
					  part->children) < 0)
			return -1;
	}
	return 0;
}

int fts_lmdb_partmap_build(struct mail *mail, buffer_t *dest,
			   const char **error_r)
{
	struct fts_lmdb_mail_map map;
	struct fts_lmdb_crlf_scan crlf;
	struct message_part *parts;
	struct istream *input;
	pool_t pool = pool_datastack_create();
	const char *guid;
	uoff_t size;

	if (mail_get_parts(mail, &parts) < 0 ||
	    mail_get_physical_size(mail, &size) < 0 ||
	    mail_get_special(mail, MAIL_FETCH_GUID, &guid) < 0 ||
	    mail_get_stream_because(mail, NULL, NULL, "fts-lmdb part map",
				    &input) < 0) {
		*error_r = mailbox_get_last_internal_error(mail->box, NULL);
		return -1;
	}
	fts_lmdb_mail_map_init(pool, &map);
	map.physical_size = size;
	map.guid = guid;
	map.converts_cleanly = TRUE;
	fts_lmdb_crlf_scan_init(&crlf, FTS_LMDB_PARTMAP_SPACING, &map.crlf);
	/* a small message is read quickly anyway: no CRLF checkpoints */
	if ((size >= FTS_LMDB_PARTMAP_SPACING &&
	     fts_lmdb_partmap_read(input, 0, size, NULL, &crlf) < 0) ||
	    fts_lmdb_partmap_walk(&map, pool, input, parts) < 0) {
		*error_r = input->stream_errno != 0 ?
			i_stream_get_error(input) :
			"the mail is shorter than its size";
		return -1;
	}
	if (array_count(&map.crlf) <= 1 && array_count(&map.parts) == 0)
		return 0;
	fts_lmdb_mail_map_encode(&map, dest);
	return 1;
}

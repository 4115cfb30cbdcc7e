#ifndef FTS_LMDB_PARTMAP_H
#define FTS_LMDB_PARTMAP_H

/* The part map of a message: what a partial fetch needs to seek instead
   of parse. For every base64 or quoted-printable leaf part it holds the
   decoded size and checkpoints, each an encoded offset where a fresh
   decoder produces exactly the decoded bytes from the checkpoint's
   decoded offset on. For the whole message it holds checkpoints from
   physical (LF) offsets to IMAP's CRLF offsets. Nothing here reads mail:
   the scanners are fed bytes, so that they can be tested and fuzzed
   against full decoding. */

#include "array.h"

/* a checkpoint every this many encoded bytes: a slice decodes at most
   this much before its first byte */
#define FTS_LMDB_PARTMAP_SPACING (64 * 1024)

enum fts_lmdb_partmap_cte {
	FTS_LMDB_PARTMAP_BASE64 = 1,
	FTS_LMDB_PARTMAP_QP = 2,
};

struct fts_lmdb_checkpoint {
	/* offsets from the start of the part's body (or of the message) */
	uoff_t encoded;
	uoff_t decoded;
};
ARRAY_DEFINE_TYPE(fts_lmdb_checkpoint, struct fts_lmdb_checkpoint);

struct fts_lmdb_part_map {
	/* as in struct message_part, all physical */
	uoff_t physical_pos;
	uoff_t header_size;
	uoff_t body_size;
	uoff_t decoded_size;
	enum fts_lmdb_partmap_cte cte;
	ARRAY_TYPE(fts_lmdb_checkpoint) checkpoints;
};

struct fts_lmdb_mail_map {
	uoff_t physical_size;
	/* the mail's GUID: a record that doesn't match the file isn't used */
	const char *guid;
	/* encoded = physical offset, decoded = virtual (CRLF) offset */
	ARRAY_TYPE(fts_lmdb_checkpoint) crlf;
	/* Dovecot's BINARY.SIZE converts the whole message and sums over
	   every part with a base64 or quoted-printable header: this says
	   whether that conversion succeeds, and where those parts start */
	bool converts_cleanly;
	ARRAY(uoff_t) converted_pos;
	ARRAY(struct fts_lmdb_part_map) parts;
};

void fts_lmdb_mail_map_init(pool_t pool, struct fts_lmdb_mail_map *map_r);
void fts_lmdb_mail_map_encode(const struct fts_lmdb_mail_map *map,
			      buffer_t *dest);
/* Returns -1 with an error if the record is damaged. */
int fts_lmdb_mail_map_decode(pool_t pool, const void *data, size_t size,
			     struct fts_lmdb_mail_map *map_r,
			     const char **error_r);
const struct fts_lmdb_part_map *
fts_lmdb_mail_map_find_part(const struct fts_lmdb_mail_map *map,
			    uoff_t physical_pos);

/* The last checkpoint whose decoded offset is <= decoded (the list
   starts with 0,0, so there always is one). */
const struct fts_lmdb_checkpoint *
fts_lmdb_checkpoint_find(const ARRAY_TYPE(fts_lmdb_checkpoint) *cps,
			 uoff_t decoded);

/* The last checkpoint whose encoded offset is <= encoded. */
const struct fts_lmdb_checkpoint *
fts_lmdb_checkpoint_find_encoded(const ARRAY_TYPE(fts_lmdb_checkpoint) *cps,
				 uoff_t encoded);

/* Scans a part's encoded body. Returns -1 from more/finish if the body
   doesn't decode cleanly: such a part gets no map, and fetches take
   Dovecot's path, which reports the error as it always does. */
struct fts_lmdb_part_scan;
struct fts_lmdb_part_scan *
fts_lmdb_part_scan_init(enum fts_lmdb_partmap_cte cte, uoff_t spacing,
			ARRAY_TYPE(fts_lmdb_checkpoint) *checkpoints);
int fts_lmdb_part_scan_more(struct fts_lmdb_part_scan *scan,
			    const unsigned char *data, size_t size);
int fts_lmdb_part_scan_finish(struct fts_lmdb_part_scan **scan,
			      uoff_t *decoded_size_r);

/* Physical to virtual (CRLF) offsets: every LF without a CR before it
   becomes CRLF. Checkpoints are placed just after an LF. */
struct fts_lmdb_crlf_scan {
	ARRAY_TYPE(fts_lmdb_checkpoint) *checkpoints;
	uoff_t spacing, physical, virtual, last_checkpoint;
	bool last_cr;
};
void fts_lmdb_crlf_scan_init(struct fts_lmdb_crlf_scan *scan,
			     uoff_t spacing,
			     ARRAY_TYPE(fts_lmdb_checkpoint) *checkpoints);
void fts_lmdb_crlf_scan_more(struct fts_lmdb_crlf_scan *scan,
			     const unsigned char *data, size_t size);

#endif

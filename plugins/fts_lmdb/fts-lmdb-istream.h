#ifndef FTS_LMDB_ISTREAM_H
#define FTS_LMDB_ISTREAM_H

struct fts_lmdb_part_map;

/* The decoded body of a base64 or quoted-printable part, seekable in
   O(distance to the nearest checkpoint): a seek starts a new decoder at
   the checkpoint before the offset instead of decoding from the start.
   mail_input is the whole message; it is referenced, not consumed. */
struct istream *
fts_lmdb_istream_create(struct istream *mail_input,
			const struct fts_lmdb_part_map *part);

#endif

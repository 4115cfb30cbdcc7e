#ifndef FTS_LMDB_POSTINGS_H
#define FTS_LMDB_POSTINGS_H

/* A posting list: the messages a token occurs in, with the fields it
   occurs in. Stored as a header (last UID, count) followed by
   (UID delta, field mask) pairs, both numpacked, UIDs ascending, so that
   new mail is appended without decoding what is there. */

struct fts_lmdb_posting_header {
	uint32_t last_uid;
	uint32_t count;
};

#define FTS_LMDB_POSTING_HEADER_SIZE 8

int fts_lmdb_postings_header(const void *data, size_t size,
			     struct fts_lmdb_posting_header *hdr_r);
void fts_lmdb_postings_write_header(buffer_t *buf,
				    const struct fts_lmdb_posting_header *hdr);
/* Append one (uid, mask), uid > hdr->last_uid; updates hdr. */
void fts_lmdb_postings_append(buffer_t *buf,
			      struct fts_lmdb_posting_header *hdr,
			      uint32_t uid, uint32_t mask);

struct fts_lmdb_postings_iter {
	const uint8_t *p, *end;
	uint32_t uid;
	bool failed;
};

void fts_lmdb_postings_iter_init(struct fts_lmdb_postings_iter *iter,
				 const void *data, size_t size);
/* FALSE at the end or on damage (iter->failed). */
bool fts_lmdb_postings_iter_next(struct fts_lmdb_postings_iter *iter,
				 uint32_t *uid_r, uint32_t *mask_r);

#endif

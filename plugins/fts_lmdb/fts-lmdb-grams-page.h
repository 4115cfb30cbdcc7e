#ifndef FTS_LMDB_GRAMS_PAGE_H
#define FTS_LMDB_GRAMS_PAGE_H

/* One page of the trigram filter, built and parsed, apart from LMDB:
   what fts-lmdb-grams.c keeps in the grams database, and what the unit
   tests and the fuzzer feed damaged copies of. */

#include "array.h"

#define FTS_LMDB_PREFIX_MAX 0xffffff
#define FTS_LMDB_GRAM_MAX 0xffffff
/* a page's trigrams: with its 4-byte header and the checksum, one
   overflow page (4096 bytes less LMDB's 16-byte page header) */
#define FTS_LMDB_GRAMS_PAGE_MAX (4096 - 16 - 4 - 4)

/* A prefix as a number: its three bytes, big endian. */
ARRAY_DEFINE_TYPE(fts_lmdb_prefix, uint32_t);

struct fts_lmdb_grams_page {
	/* the key's trigram, and the next page's unless last */
	uint32_t low, next;
	bool last;
	const unsigned char *p, *end;
};

struct fts_lmdb_grams_page_iter {
	const struct fts_lmdb_grams_page *page;
	const unsigned char *p;
	uint32_t prev;
	bool started;
};

/* The page being built */
struct fts_lmdb_grams_page_builder {
	buffer_t *entries;
	uint32_t low, prev;
	unsigned int count;
};

/* Three bytes as a trigram or prefix */
static inline uint32_t fts_lmdb_gram_at(const unsigned char *p)
{
	return ((uint32_t)p[0] << 16) | ((uint32_t)p[1] << 8) | p[2];
}

/* Parses the value of the page whose key ends in the 3 bytes at low.
   -1 if its header is damaged or its range is empty. */
int fts_lmdb_grams_page_parse(const unsigned char *low,
			      const void *data, size_t size,
			      struct fts_lmdb_grams_page *page_r);
void fts_lmdb_grams_page_iter_init(struct fts_lmdb_grams_page_iter *iter,
				   const struct fts_lmdb_grams_page *page);
/* The next trigram of a page, ascending, with its list: 1 if found, 0
   at the end, -1 if the page doesn't add up. */
int fts_lmdb_grams_page_next(struct fts_lmdb_grams_page_iter *iter,
			     uint32_t *gram_r, const unsigned char **list_r,
			     size_t *list_size_r);

/* A trigram's list of prefixes into dest, ascending: -1 if damaged. */
int fts_lmdb_grams_list_decode(const unsigned char *p, size_t size,
			       ARRAY_TYPE(fts_lmdb_prefix) *dest);
/* Merges the prefixes (in the low 24 bits) of pairs, ascending, into
   the list at old (or none if NULL), encoded into dest. -1 if old is
   damaged. */
int fts_lmdb_grams_list_merge(const unsigned char *old, size_t old_size,
			      const uint64_t *pairs, unsigned int count,
			      ARRAY_TYPE(fts_lmdb_prefix) *scratch,
			      ARRAY_TYPE(fts_lmdb_prefix) *merged,
			      buffer_t *dest);

/* The builder's buffer is on the data stack. */
void fts_lmdb_grams_page_builder_init(struct fts_lmdb_grams_page_builder *b);
void fts_lmdb_grams_page_builder_start(struct fts_lmdb_grams_page_builder *b,
				       uint32_t low);
/* Whether a trigram with a list of list_size bytes still fits in
   FTS_LMDB_GRAMS_PAGE_MAX (an empty page takes any). */
bool fts_lmdb_grams_page_builder_fits(struct fts_lmdb_grams_page_builder *b,
				      uint32_t gram, size_t list_size);
/* Trigrams go in ascending order, from the page's low one. */
void fts_lmdb_grams_page_builder_add(struct fts_lmdb_grams_page_builder *b,
				     uint32_t gram, const void *list,
				     size_t list_size);
void fts_lmdb_grams_page_builder_finish(struct fts_lmdb_grams_page_builder *b,
					uint32_t next, bool last,
					buffer_t *value);

#endif

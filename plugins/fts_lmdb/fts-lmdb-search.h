#ifndef FTS_LMDB_SEARCH_H
#define FTS_LMDB_SEARCH_H

#include "seq-range-array.h"

struct mailbox;
struct mail_search_arg;

/* mailbox_allocated hook: searches of an fts_lmdb mailbox step only
   through the messages that the index says may match (see
   fts-lmdb-search.c). */
void fts_lmdb_search_mailbox_allocated(struct mailbox *box);

/* Called by a lookup that answered some of args (the arg list of one
   level of a search) and marked them match_always: remembers the UIDs it
   left possible (definite or maybe), so that the search can skip the
   others. Messages above the index's last_uid are always possible. */
void fts_lmdb_search_level_answered(struct mailbox *box,
				    const struct mail_search_arg *args,
				    const ARRAY_TYPE(seq_range) *possible_uids,
				    uint32_t last_uid);

#endif

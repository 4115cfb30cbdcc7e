/* Indexes a rule set so that evaluating a session does not test every
   rule. Each rule is filed under the most selective keys it has: its
   literal user names, else its positive networks, else the literal
   domains of its user globs or its literal domains, else its literal
   groups. Rules with none of these go to a generic list. A lookup
   gathers the lists that the session's keys reach and walks them merged
   in rule order, so that the first rule that fully matches is still the
   first in the file. The same keys and the same merge serve the
   compiled file (access-rules-compiled.c). */

#include "lib.h"
#include "array.h"
#include "hash.h"
#include "str.h"
#include "access-rules-private.h"

ARRAY_DEFINE_TYPE(uint32_list, uint32_t);
HASH_TABLE_DEFINE_TYPE(access_rules_key, const char *,
		       ARRAY_TYPE(uint32_list) *);

struct access_rules_trie_node {
	struct access_rules_trie_node *child[2];
	ARRAY_TYPE(uint32_list) rules;
};

struct access_rules_index {
	pool_t pool;
	const struct access_rule_set *set;
	HASH_TABLE_TYPE(access_rules_key) keys[ACCESS_RULES_KEY_NET];
	struct access_rules_trie_node *trie_ip4, *trie_ip6;
	ARRAY_TYPE(uint32_list) generic;
};

static bool access_rules_is_literal(const char *str)
{
	return strpbrk(str, "*?") == NULL;
}

static bool
access_rules_strings_literal(const struct access_rule_strings *strings)
{
	const char *str;

	if (strings == NULL || array_count(&strings->positive) == 0)
		return FALSE;
	array_foreach_elem(&strings->positive, str) {
		if (!access_rules_is_literal(str))
			return FALSE;
	}
	return TRUE;
}

/* Returns the literal domain of a user glob ("*@example.com" gives
   "example.com"), or NULL if the domain part has wildcards. */
static const char *access_rules_glob_domain(const char *glob)
{
	const char *at = strrchr(glob, '@');

	if (at == NULL || at[1] == '\0' || !access_rules_is_literal(at + 1))
		return NULL;
	return at + 1;
}

static bool
access_rules_user_domains_literal(const struct access_rule_strings *users)
{
	const char *glob;

	if (users == NULL || array_count(&users->positive) == 0)
		return FALSE;
	array_foreach_elem(&users->positive, glob) {
		if (access_rules_glob_domain(glob) == NULL)
			return FALSE;
	}
	return TRUE;
}

void access_rules_rule_keys(const struct access_rule *rule,
			    access_rules_key_callback_t *callback,
			    void *context)
{
	const struct access_rule_net *net;
	const char *key;

	if (access_rules_strings_literal(rule->users)) {
		array_foreach_elem(&rule->users->positive, key)
			callback(context, ACCESS_RULES_KEY_USER, key, NULL);
	} else if (rule->nets != NULL &&
		   array_count(&rule->nets->positive) > 0) {
		array_foreach(&rule->nets->positive, net)
			callback(context, ACCESS_RULES_KEY_NET, NULL, net);
	} else if (access_rules_user_domains_literal(rule->users)) {
		/* "user *@example.com" can only match that domain */
		array_foreach_elem(&rule->users->positive, key) {
			callback(context, ACCESS_RULES_KEY_DOMAIN,
				 access_rules_glob_domain(key), NULL);
		}
	} else if (access_rules_strings_literal(rule->domains)) {
		array_foreach_elem(&rule->domains->positive, key)
			callback(context, ACCESS_RULES_KEY_DOMAIN, key, NULL);
	} else if (access_rules_strings_literal(rule->groups)) {
		array_foreach_elem(&rule->groups->positive, key)
			callback(context, ACCESS_RULES_KEY_GROUP, key, NULL);
	} else {
		callback(context, ACCESS_RULES_KEY_GENERIC, NULL, NULL);
	}
}

bool access_rules_ip_bit(const struct ip_addr *ip, unsigned int bit)
{
	const unsigned char *bytes = IPADDR_IS_V4(ip) ?
		(const unsigned char *)&ip->u.ip4.s_addr : ip->u.ip6.s6_addr;

	return (bytes[bit / 8] & (0x80 >> (bit % 8))) != 0;
}

/* Appends the rule to a list unless it is already its last entry
   ("user a,a" would file it twice). */
static void access_rules_list_add(pool_t pool, ARRAY_TYPE(uint32_list) *list,
				  uint32_t rule_index)
{
	if (!array_is_created(list))
		p_array_init(list, pool, 2);
	if (array_count(list) == 0 ||
	    *array_idx(list, array_count(list) - 1) != rule_index)
		array_push_back(list, &rule_index);
}

static void
access_rules_trie_add(struct access_rules_index *index,
		      const struct access_rule_net *net, uint32_t rule_index)
{
	struct access_rules_trie_node **nodep, *node;
	unsigned int bit;

	nodep = IPADDR_IS_V4(&net->ip) ? &index->trie_ip4 : &index->trie_ip6;
	for (bit = 0;; bit++) {
		if (*nodep == NULL)
			*nodep = p_new(index->pool, struct access_rules_trie_node, 1);
		node = *nodep;
		if (bit == net->bits)
			break;
		nodep = &node->child[access_rules_ip_bit(&net->ip, bit) ? 1 : 0];
	}
	access_rules_list_add(index->pool, &node->rules, rule_index);
}

struct access_rules_index_add_context {
	struct access_rules_index *index;
	uint32_t rule_index;
};

static void
access_rules_index_add_key(void *context, enum access_rules_key_type type,
			   const char *key, const struct access_rule_net *net)
{
	struct access_rules_index_add_context *ctx = context;
	struct access_rules_index *index = ctx->index;
	ARRAY_TYPE(uint32_list) *list;

	switch (type) {
	case ACCESS_RULES_KEY_USER:
	case ACCESS_RULES_KEY_DOMAIN:
	case ACCESS_RULES_KEY_GROUP:
		list = hash_table_lookup(index->keys[type], key);
		if (list == NULL) {
			list = p_new(index->pool, ARRAY_TYPE(uint32_list), 1);
			hash_table_insert(index->keys[type], key, list);
		}
		access_rules_list_add(index->pool, list, ctx->rule_index);
		break;
	case ACCESS_RULES_KEY_NET:
		access_rules_trie_add(index, net, ctx->rule_index);
		break;
	case ACCESS_RULES_KEY_GENERIC:
		access_rules_list_add(index->pool, &index->generic,
				      ctx->rule_index);
		break;
	}
}

void access_rules_index_free(struct access_rules_index **_index)
{
	struct access_rules_index *index = *_index;
	unsigned int i;

	if (index == NULL)
		return;
	*_index = NULL;
	for (i = 0; i < N_ELEMENTS(index->keys); i++)
		hash_table_destroy(&index->keys[i]);
}

struct access_rules_index *
access_rules_index_build(pool_t pool, const struct access_rule_set *set)
{
	struct access_rules_index_add_context ctx;
	struct access_rules_index *index;
	struct access_rule *rule;
	unsigned int i;

	index = p_new(pool, struct access_rules_index, 1);
	index->pool = pool;
	index->set = set;
	for (i = 0; i < N_ELEMENTS(index->keys); i++)
		hash_table_create(&index->keys[i], pool, 0, str_hash, strcmp);
	p_array_init(&index->generic, pool, 8);

	i_zero(&ctx);
	ctx.index = index;
	array_foreach_elem(&set->rules, rule) {
		ctx.rule_index = rule->index;
		access_rules_rule_keys(rule, access_rules_index_add_key, &ctx);
	}
	return index;
}

void access_rules_cursor_add(ARRAY_TYPE(access_rules_cursor) *cursors,
			     const uint32_t *indexes, unsigned int count)
{
	struct access_rules_cursor *cursor;

	if (count == 0)
		return;
	cursor = array_append_space(cursors);
	cursor->indexes = indexes;
	cursor->count = count;
}

static void
access_rules_cursor_add_list(ARRAY_TYPE(access_rules_cursor) *cursors,
			     const ARRAY_TYPE(uint32_list) *list)
{
	const uint32_t *indexes;
	unsigned int count;

	if (list == NULL || !array_is_created(list))
		return;
	indexes = array_get(list, &count);
	access_rules_cursor_add(cursors, indexes, count);
}

int access_rules_cursors_first_match(ARRAY_TYPE(access_rules_cursor) *cursors,
				     access_rules_match_callback_t *match,
				     void *context, uint32_t *rule_index_r)
{
	struct access_rules_cursor *cursor;
	uint32_t next;
	bool found;
	int ret;

	for (;;) {
		found = FALSE;
		next = 0;
		array_foreach_modifiable(cursors, cursor) {
			if (cursor->pos < cursor->count &&
			    (!found || cursor->indexes[cursor->pos] < next)) {
				next = cursor->indexes[cursor->pos];
				found = TRUE;
			}
		}
		if (!found)
			return 0;
		if ((ret = match(context, next)) != 0) {
			*rule_index_r = next;
			return ret;
		}
		/* advance every list past this rule, so each rule is
		   tested once however many keys filed it */
		array_foreach_modifiable(cursors, cursor) {
			if (cursor->pos < cursor->count &&
			    cursor->indexes[cursor->pos] == next)
				cursor->pos++;
		}
	}
}

static void
access_rules_cursor_add_key(ARRAY_TYPE(access_rules_cursor) *cursors,
			    HASH_TABLE_TYPE(access_rules_key) hash,
			    const char *key)
{
	if (key == NULL || hash_table_count(hash) == 0)
		return;
	/* no T_BEGIN here: cursors lives in the caller's data stack frame
	   and may grow */
	access_rules_cursor_add_list(cursors,
		hash_table_lookup(hash, t_str_lcase(key)));
}

static void
access_rules_cursor_add_trie(ARRAY_TYPE(access_rules_cursor) *cursors,
			     const struct access_rules_trie_node *node,
			     const struct ip_addr *ip)
{
	unsigned int bit, max_bits = IPADDR_IS_V4(ip) ? 32 : 128;

	for (bit = 0; node != NULL; bit++) {
		access_rules_cursor_add_list(cursors, &node->rules);
		if (bit == max_bits)
			break;
		node = node->child[access_rules_ip_bit(ip, bit) ? 1 : 0];
	}
}

struct access_rules_index_match_context {
	const struct access_rules_index *index;
	const struct access_rules_session *session;
};

static int access_rules_index_match(void *context, uint32_t rule_index)
{
	struct access_rules_index_match_context *ctx = context;
	const struct access_rule *rule =
		array_idx_elem(&ctx->index->set->rules, rule_index);

	return access_rule_match(rule, ctx->session) ? 1 : 0;
}

const struct access_rule *
access_rules_index_lookup(const struct access_rules_index *index,
			  const struct access_rules_session *session)
{
	struct access_rules_index_match_context ctx = {
		.index = index,
		.session = session,
	};
	ARRAY_TYPE(access_rules_cursor) cursors;
	const struct ip_addr *ip = &session->remote_ip;
	struct ip_addr ip4;
	uint32_t rule_index;
	unsigned int i;

	t_array_init(&cursors, 8);
	access_rules_cursor_add_key(&cursors, index->keys[ACCESS_RULES_KEY_USER],
				    session->username);
	access_rules_cursor_add_key(&cursors,
				    index->keys[ACCESS_RULES_KEY_DOMAIN],
				    access_rules_user_domain(session->username));
	for (i = 0; session->groups != NULL && session->groups[i] != NULL; i++) {
		access_rules_cursor_add_key(&cursors,
					    index->keys[ACCESS_RULES_KEY_GROUP],
					    session->groups[i]);
	}
	if (net_ipv6_mapped_ipv4_convert(&session->remote_ip, &ip4) == 0)
		ip = &ip4;
	if (IPADDR_IS_V4(ip))
		access_rules_cursor_add_trie(&cursors, index->trie_ip4, ip);
	else if (IPADDR_IS_V6(ip))
		access_rules_cursor_add_trie(&cursors, index->trie_ip6, ip);
	access_rules_cursor_add_list(&cursors, &index->generic);

	if (access_rules_cursors_first_match(&cursors, access_rules_index_match,
					     &ctx, &rule_index) <= 0)
		return NULL;
	return array_idx_elem(&index->set->rules, rule_index);
}

void access_rules_decision_from_rule(struct access_rules_decision *decision,
				     const struct access_rule *rule)
{
	decision->action = rule->action;
	decision->rule_line = rule->line;
	decision->reason = rule->reason;
	decision->mailboxes = rule->mailboxes;
	decision->hidden_mailboxes = rule->hidden_mailboxes;
	decision->max_sessions = rule->max_sessions;
	memcpy(decision->max_protocol_sessions, rule->max_protocol_sessions,
	       sizeof(decision->max_protocol_sessions));
}

int access_rules_evaluate(const struct access_rules *rules,
			  const char *ruleset,
			  const struct access_rules_session *session,
			  struct access_rules_decision *decision_r,
			  const char **error_r)
{
	const struct access_rule_set *set;
	const struct access_rule *rule;

	if (rules->compiled != NULL) {
		return access_rules_compiled_evaluate(rules->compiled, ruleset,
						      session, decision_r,
						      error_r);
	}
	set = access_rules_find_set(rules, ruleset);
	if (set == NULL) {
		*error_r = t_strdup_printf("no rule set \"%s\"", ruleset);
		return -1;
	}

	i_zero(decision_r);
	decision_r->ruleset = set->name;
	decision_r->depends_on_client_id = set->has_client_id_rules;
	T_BEGIN {
		rule = access_rules_index_lookup(set->index, session);
	} T_END;
	if (rule == NULL) {
		decision_r->action = set->default_action;
		decision_r->reason = set->default_reason;
		decision_r->default_line = set->default_line;
		return 0;
	}
	access_rules_decision_from_rule(decision_r, rule);
	return 0;
}

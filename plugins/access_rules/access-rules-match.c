/* Decides whether one rule matches a session. */

#include "lib.h"
#include "array.h"
#include "wildcard-match.h"
#include "access-rules-private.h"

#include <time.h>

static bool
access_rules_strings_match(const struct access_rule_strings *strings,
			   const char *value)
{
	const char *glob;
	bool matched;

	if (value == NULL)
		return FALSE;
	matched = array_count(&strings->positive) == 0;
	array_foreach_elem(&strings->positive, glob) {
		if (wildcard_match_icase(value, glob)) {
			matched = TRUE;
			break;
		}
	}
	if (!matched)
		return FALSE;
	array_foreach_elem(&strings->negative, glob) {
		if (wildcard_match_icase(value, glob))
			return FALSE;
	}
	return TRUE;
}

/* A user is in a group condition when any of its groups matches a
   positive value and none of its groups matches a negated one. */
static bool
access_rules_groups_match(const struct access_rule_strings *strings,
			  const char *const *groups)
{
	const char *glob;
	unsigned int i;
	bool matched;

	matched = array_count(&strings->positive) == 0;
	for (i = 0; groups != NULL && groups[i] != NULL && !matched; i++) {
		array_foreach_elem(&strings->positive, glob) {
			if (wildcard_match_icase(groups[i], glob)) {
				matched = TRUE;
				break;
			}
		}
	}
	if (!matched)
		return FALSE;
	for (i = 0; groups != NULL && groups[i] != NULL; i++) {
		array_foreach_elem(&strings->negative, glob) {
			if (wildcard_match_icase(groups[i], glob))
				return FALSE;
		}
	}
	return TRUE;
}

static bool
access_rules_nets_match(const struct access_rule_nets *nets,
			const struct ip_addr *ip)
{
	const struct access_rule_net *net;
	bool matched;

	if (ip->family == 0)
		return FALSE;
	matched = array_count(&nets->positive) == 0;
	array_foreach(&nets->positive, net) {
		if (net_is_in_network(ip, &net->ip, net->bits)) {
			matched = TRUE;
			break;
		}
	}
	if (!matched)
		return FALSE;
	array_foreach(&nets->negative, net) {
		if (net_is_in_network(ip, &net->ip, net->bits))
			return FALSE;
	}
	return TRUE;
}

static bool
access_rules_ports_match(const struct access_rule_ports *ports, in_port_t port)
{
	const struct access_rule_port_range *range;
	bool matched;

	if (port == 0)
		return FALSE;
	matched = array_count(&ports->positive) == 0;
	array_foreach(&ports->positive, range) {
		if (port >= range->first && port <= range->last) {
			matched = TRUE;
			break;
		}
	}
	if (!matched)
		return FALSE;
	array_foreach(&ports->negative, range) {
		if (port >= range->first && port <= range->last)
			return FALSE;
	}
	return TRUE;
}

const char *access_rules_user_domain(const char *username)
{
	const char *at = username == NULL ? NULL : strrchr(username, '@');

	return at == NULL ? NULL : at + 1;
}

static bool
access_rules_time_match(const struct access_rule *rule, time_t now)
{
	struct tm tm;
	unsigned int minute;

	if (localtime_r(&now, &tm) == NULL)
		return FALSE;
	if (rule->days != 0 && (rule->days & (1U << tm.tm_wday)) == 0)
		return FALSE;
	if (!rule->has_time)
		return TRUE;
	minute = tm.tm_hour * 60 + tm.tm_min;
	if (rule->time_start < rule->time_end)
		return minute >= rule->time_start && minute < rule->time_end;
	return minute >= rule->time_start || minute < rule->time_end;
}

bool access_rule_match(const struct access_rule *rule,
		       const struct access_rules_session *session)
{
	if ((rule->protocols & (1U << session->protocol)) == 0)
		return FALSE;
	if (rule->users != NULL &&
	    !access_rules_strings_match(rule->users, session->username))
		return FALSE;
	if (rule->domains != NULL &&
	    !access_rules_strings_match(rule->domains,
			access_rules_user_domain(session->username)))
		return FALSE;
	if (rule->groups != NULL &&
	    !access_rules_groups_match(rule->groups, session->groups))
		return FALSE;
	if (rule->nets != NULL &&
	    !access_rules_nets_match(rule->nets, &session->remote_ip))
		return FALSE;
	if (rule->ports != NULL &&
	    !access_rules_ports_match(rule->ports, session->local_port))
		return FALSE;
	if (rule->tls == ACCESS_RULE_TLS_YES && !session->tls)
		return FALSE;
	if (rule->tls == ACCESS_RULE_TLS_NO && session->tls)
		return FALSE;
	if (rule->client_names != NULL &&
	    !access_rules_strings_match(rule->client_names,
					session->client_name))
		return FALSE;
	if (rule->client_versions != NULL &&
	    !access_rules_strings_match(rule->client_versions,
					session->client_version))
		return FALSE;
	if ((rule->has_time || rule->days != 0) &&
	    !access_rules_time_match(rule, session->now))
		return FALSE;
	return TRUE;
}

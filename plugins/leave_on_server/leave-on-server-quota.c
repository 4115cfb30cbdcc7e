/* Reads the user's quota usage through the quota plugin. The quota
   symbols are weak, so that leave_on_server loads without the quota
   plugin when its policy doesn't need it. */

#include "lib.h"
#include "mail-user.h"
#include "quota.h"
#include "leave-on-server-quota.h"

#pragma weak quota_root_iter_init_user
#pragma weak quota_root_iter_next
#pragma weak quota_root_iter_deinit
#pragma weak quota_get_resource
#pragma weak quota_root_get_name

bool leave_on_server_quota_available(void)
{
	return quota_root_iter_init_user != NULL &&
		quota_get_resource != NULL;
}

int leave_on_server_quota_excess(struct mail_user *user,
				 unsigned int high_pct, unsigned int low_pct,
				 uint64_t *excess_r, const char **error_r)
{
	struct quota_root_iter *iter;
	struct quota_root *root;
	enum quota_get_result res;
	uint64_t value, limit, low;
	const char *error;
	int ret = 0;

	*excess_r = 0;
	iter = quota_root_iter_init_user(user);
	while ((root = quota_root_iter_next(iter)) != NULL) {
		res = quota_get_resource(root, "", QUOTA_NAME_STORAGE_BYTES,
					 &value, &limit, &error);
		if (res == QUOTA_GET_RESULT_UNLIMITED ||
		    res == QUOTA_GET_RESULT_UNKNOWN_RESOURCE)
			continue;
		if (res != QUOTA_GET_RESULT_LIMITED) {
			*error_r = t_strdup_printf(
				"quota root %s: %s", quota_root_get_name(root),
				res == QUOTA_GET_RESULT_BACKGROUND_CALC ?
				"being recalculated" : error);
			ret = -1;
			break;
		}
		if (limit == 0 || value * 100 <= limit * high_pct)
			continue;
		low = limit * low_pct / 100;
		if (value - low > *excess_r)
			*excess_r = value - low;
	}
	quota_root_iter_deinit(&iter);
	return ret;
}

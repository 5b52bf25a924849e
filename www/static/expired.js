// The expired/used-link page: texts in the page's language, the support link,
// and the state for a framing panel.
import { applyBranding, postState, settings, showSupport, t } from '/static/ringside.js';

applyBranding();
document.title = settings.title ? `${settings.title} — ${t('expired.title')}` : t('expired.title');
showSupport(document.getElementById('card'), true);
postState('failed', 'expired', t('expired.title'));

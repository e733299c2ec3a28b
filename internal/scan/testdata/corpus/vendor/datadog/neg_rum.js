import { datadogRum } from '@datadog/browser-rum';

// The RUM client token is public: it ships in the bundle to every browser.
datadogRum.init({
  applicationId: '@@UUID@@',
  clientToken: 'pub@@R::hex:32@@',
  site: 'datadoghq.eu',
  service: 'storefront',
  sessionSampleRate: 20,
});

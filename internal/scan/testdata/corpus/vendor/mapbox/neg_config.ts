export const config = {
  mapboxToken: '@@MAPBOX:pk@@',
  mapboxStyle: 'mapbox://styles/acme/clx0r8d1q00ab01qs2f7h3k9m',
  apiToken: process.env.API_TOKEN,
};

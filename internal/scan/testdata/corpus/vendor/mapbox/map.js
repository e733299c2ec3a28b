import mapboxgl from 'mapbox-gl';

// Public token, URL-restricted to our domains in the Mapbox account.
mapboxgl.accessToken = '@@MAPBOX:pk@@';

export const map = new mapboxgl.Map({
  container: 'map',
  style: 'mapbox://styles/mapbox/streets-v12',
  center: [13.405, 52.52],
  zoom: 11,
});
